"""The KneeOAGrading self-test body; the module file's KneeOAGradingTest runs it (Reload and Test, ctest)."""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from kneeoa.contracts.segmentation import MASK_SOURCES, SEGMENT_TITLES, thickness_columns
from kneeoa.slicer import grading, results, selftest
from kneeoa.slicer import segmentation as seg_glue

# 48^3 is the demo segmenter's patch: one window, ~1 s; on this phantom (seed 0) case 002 has all five labels
# in its reference mask and in the demo segmenter's output (the thin medial tibial cartilage needs 48^3;
# at 32^3 it is a few voxels and may vanish).
PHANTOM_SHAPE = (48, 48, 48)


class GradingSelfTest(selftest.ModuleSelfTestMixin, ScriptedLoadableModuleTest):
    """Grade a phantom case end to end with the logic, then segment a second one with the bundled demo
    segmenter and grade it without a cartilage node (its automatic mask is used); a few seconds on a CPU."""

    def test_GradePhantomCase(self):
        self.delayDisplay("Generating a phantom knee")
        folder = self.phantomFolder("KneeOAGradingTest-", n_train=2, n_test=0, shape=PHANTOM_SHAPE)
        # Slicer's own readers, as a user would load the files
        volume = slicer.util.loadVolume(str(folder / "imagesTr" / "oaizib_001_0000.nii.gz"))
        labels = slicer.util.loadLabelVolume(str(folder / "labelsTr" / "oaizib_001.nii.gz"))
        logic = self.logicClass()
        checkpoint = logic.defaultCheckpoint() or self._untrainedCheckpoint(folder)

        self.delayDisplay("Grading")
        result = logic.process(volume, labels, checkpoint=checkpoint, device="cpu")
        self.assertEqual(len(result.kl_probs), 5)
        self.assertAlmostEqual(sum(result.kl_probs), 1.0, places=4)
        self.assertTrue(0.0 <= result.oa_prob <= 1.0)
        self.assertIsNotNone(result.saliency_node)
        self.assertIsNotNone(result.overlap)
        self.assertEqual(results.stored_result(volume)["pred_kl"], result.pred_kl)
        self.assertEqual(results.graded_volume_nodes(slicer.mrmlScene), [volume])

        self._segmentAndGradeWithoutMask(folder, logic, checkpoint)
        self.delayDisplay("Test passed")

    def _segmentAndGradeWithoutMask(self, folder, logic, checkpoint):
        """"Segment knee" on a volume without a mask, then grading with no cartilage node chosen."""
        try:
            logic.segmenterPath(None)
        except Exception as err:  # an extension built without Resources/demo_seg_model.safetensors
            self.delayDisplay(f"Segment knee not tested: {err}")
            return
        volume = slicer.util.loadVolume(str(folder / "imagesTr" / "oaizib_002_0000.nii.gz"))
        self.delayDisplay("Segmenting with the bundled demo segmenter")
        segmented = logic.segmentKnee(volume, device="cpu")
        node = segmented.segmentation_node
        self.assertTrue(node.IsA("vtkMRMLSegmentationNode") and seg_glue.is_automatic(node))
        segmentation = node.GetSegmentation()
        names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        self.assertEqual(names, set(SEGMENT_TITLES.values()))
        table = segmented.thickness_table_node
        self.assertIs(volume.GetNodeReference(seg_glue.ROLE_THICKNESS_TABLE), table)
        self.assertEqual(table.GetTable().GetNumberOfRows(), len(thickness_columns()))  # mean + low pct x 3

        self.delayDisplay("Grading without a cartilage node")
        # the widget's rule when the user chooses no cartilage: the volume's own (here automatic) segmentation
        found = grading.find_cartilage(volume, slicer.mrmlScene)
        self.assertIs(found, node)
        result = logic.process(volume, found, checkpoint=checkpoint, device="cpu")
        self.assertEqual(result.result["mask_source"], MASK_SOURCES[1])
        self.assertIs(result.cartilage_node, node)
        self.assertIsNotNone(result.overlap)

    def _untrainedCheckpoint(self, folder):
        """Without the bundled demo model, a tiny untrained one still exercises the whole path."""
        from kneeoa.models.checkpoint import save_checkpoint
        from kneeoa.models.registry import ModelSpec, build_model

        model = build_model(ModelSpec(backbone="resnet3d", variant="dual", input_shape=(32, 32, 32), width=4))
        return save_checkpoint(folder / "untrained.safetensors", model, {"training_data": "untrained (self-test)"})
