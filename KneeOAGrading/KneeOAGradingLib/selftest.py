"""The KneeOAGrading self-test body; the module file's KneeOAGradingTest runs it (Reload and Test, ctest)."""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from kneeoa.slicer import results, selftest


class GradingSelfTest(selftest.ModuleSelfTestMixin, ScriptedLoadableModuleTest):
    """Grade a phantom case end to end with the logic (a few seconds on a CPU)."""

    def test_GradePhantomCase(self):
        self.delayDisplay("Generating a phantom knee")
        folder = self.phantomFolder("KneeOAGradingTest-", n_train=1, n_test=0, shape=(32, 32, 32))
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
        self.delayDisplay("Test passed")

    def _untrainedCheckpoint(self, folder):
        """Without the bundled demo model, a tiny untrained one still exercises the whole path."""
        from kneeoa.models.checkpoint import save_checkpoint
        from kneeoa.models.registry import ModelSpec, build_model

        model = build_model(ModelSpec(backbone="resnet3d", variant="dual", input_shape=(32, 32, 32), width=4))
        return save_checkpoint(folder / "untrained.safetensors", model, {"training_data": "untrained (self-test)"})
