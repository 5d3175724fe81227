"""MRML nodes <-> (array_ijk, ijk_to_ras), checked against Slicer's own file reader/writer (slicer-core)."""

from __future__ import annotations

import numpy as np
import pytest
from slicer_helpers import fresh_scene, knee_labels, oblique_affine

from kneeoa.data.volume import Volume, read_volume, write_nifti
from kneeoa.errors import InputError
from kneeoa.slicer import nodes


@pytest.fixture
def scene():
    return fresh_scene()


@pytest.fixture
def image():
    rng = np.random.default_rng(3)
    return rng.normal(size=(9, 7, 5)).astype(np.float32), oblique_affine()


def _slicer_read(scene, path, cls="vtkMRMLScalarVolumeNode"):
    """Load a file with Slicer's own storage node (ITK reader, LPS->RAS inside Slicer)."""
    node = scene.AddNewNodeByClass(cls)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node


def test_volume_node_round_trip_keeps_array_ijk_and_oblique_affine(scene, image):
    array, affine = image
    node = nodes.volume_node_from_array(array, affine, "mri", scene)
    back, back_affine = nodes.array_from_volume_node(node)
    assert back.shape == array.shape and np.array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)


def test_voxel_ijk_of_the_node_holds_array_ijk(scene, image):
    array, affine = image
    node = nodes.volume_node_from_array(array, affine, "mri", scene)
    assert node.GetImageData().GetDimensions() == array.shape  # vtk dimensions are (i, j, k)
    for ijk in [(0, 0, 0), (8, 0, 0), (0, 6, 0), (0, 0, 4), (3, 5, 2)]:
        assert node.GetImageData().GetScalarComponentAsDouble(*ijk, 0) == pytest.approx(float(array[ijk]))
    np.testing.assert_allclose(node.GetSpacing(), Volume(array, affine).spacing_mm, rtol=1e-9)


def test_slicer_reads_our_nifti_as_the_same_ijk_array_and_affine(scene, image, tmp_path):
    array, affine = image
    path = write_nifti(tmp_path / "mri.nii.gz", array, affine)
    loaded = _slicer_read(scene, path)
    back, back_affine = nodes.array_from_volume_node(loaded)
    assert np.array_equal(back, array)
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)


def test_volume_node_written_by_us_reads_back_with_kneeoa(scene, image, tmp_path):
    array, affine = image
    node = nodes.volume_node_from_array(array, affine, "mri", scene)
    volume = read_volume(nodes.write_volume_node(node, tmp_path / "out.nii.gz"))
    assert np.array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)


def test_node_written_by_slicer_as_nrrd_reads_back_with_kneeoa(scene, image, tmp_path):
    array, affine = image
    node = nodes.volume_node_from_array(array, affine, "mri", scene)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "slicer.nrrd"))
    assert storage.WriteData(node) == 1
    volume = read_volume(tmp_path / "slicer.nrrd")
    assert np.array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)


def test_affine_with_shear_is_refused(scene, image):
    array, affine = image
    sheared = affine.copy()
    sheared[0, 1] += 0.3
    with pytest.raises(ValueError, match="shear"):
        nodes.volume_node_from_array(array, sheared, "bad", scene)


def test_transformed_volume_is_refused(scene, image):
    node = nodes.volume_node_from_array(*image, "mri", scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="transform"):
        nodes.array_from_volume_node(node)


def test_label_map_to_segmentation_and_back_keeps_exact_voxel_counts(scene):
    labels = knee_labels()
    affine = oblique_affine()
    reference = nodes.volume_node_from_array(labels.astype(np.float32), affine, "mri", scene)
    segmentation = nodes.segmentation_from_labelmap(labels, affine, "knee", scene)
    names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
    assert names == {name for name, _ in nodes.KNEE_LABELS.values()}
    back = nodes.labelmap_from_segmentation(segmentation, reference, scene)
    assert back.shape == labels.shape
    assert {int(v): int(c) for v, c in zip(*np.unique(back, return_counts=True))} == \
        {0: labels.size - 89, 1: 24, 2: 12, 3: 36, 4: 8, 5: 9}
    assert np.array_equal(back, labels)


def test_segment_values_come_from_names_not_order(scene):
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[3:5, 3:5, 3:5] = 2
    affine = oblique_affine()
    reference = nodes.volume_node_from_array(labels.astype(np.float32), affine, "mri", scene)
    segmentation = nodes.segmentation_from_labelmap(labels, affine, "two", scene)
    seg = segmentation.GetSegmentation()
    seg.GetNthSegment(0).SetName("medial_tibial_cartilage")  # was label 1 -> now 4
    seg.GetNthSegment(1).SetName("Label_5")                  # was label 2 -> now 5
    back = nodes.labelmap_from_segmentation(segmentation, reference, scene)
    assert (back == 4).sum() == 8 and (back == 5).sum() == 8 and not np.isin(back, [1, 2]).any()


def test_unknown_segment_name_is_an_input_error_naming_it(scene):
    labels = knee_labels()
    affine = oblique_affine()
    reference = nodes.volume_node_from_array(labels.astype(np.float32), affine, "mri", scene)
    segmentation = nodes.segmentation_from_labelmap(labels, affine, "knee", scene)
    segmentation.GetSegmentation().GetNthSegment(0).SetName("Segment_1")
    with pytest.raises(InputError, match="'Segment_1'.*Femoral cartilage"):
        nodes.labelmap_from_segmentation(segmentation, reference, scene)


def test_label_map_node_on_the_volume_grid_is_used_as_is(scene):
    labels = knee_labels()
    affine = oblique_affine()
    volume = nodes.volume_node_from_array(labels.astype(np.float32), affine, "mri", scene)
    label_node = nodes.volume_node_from_array(labels, affine, "mask", scene, is_label=True)
    assert np.array_equal(nodes.mask_array_for_volume(label_node, volume, scene), labels)


def test_label_map_on_a_coarser_grid_is_resampled_onto_the_volume(scene):
    coarse = np.zeros((4, 4, 4), np.uint8)
    coarse[1:3, 1:3, 1:3] = 2
    coarse_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fine_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_affine[:3, 3] = -0.5  # voxel centres of the fine grid inside the coarse voxels
    volume = nodes.volume_node_from_array(np.ones((8, 8, 8), np.float32), fine_affine, "mri", scene)
    label_node = nodes.volume_node_from_array(coarse, coarse_affine, "coarse", scene, is_label=True)
    resampled = nodes.mask_array_for_volume(label_node, volume, scene)
    assert resampled.shape == (8, 8, 8)
    assert set(np.unique(resampled)) == {0, 2}
    assert (resampled == 2).sum() == 8 * 8  # 2x2x2 coarse voxels, each 2x2x2 fine voxels


def test_mask_is_written_on_the_volume_grid_as_uint8_labels(scene, tmp_path):
    labels = knee_labels()
    affine = oblique_affine()
    volume = nodes.volume_node_from_array(labels.astype(np.float32), affine, "mri", scene)
    segmentation = nodes.segmentation_from_labelmap(labels, affine, "knee", scene)
    mask = read_volume(nodes.write_mask_for_volume(segmentation, volume, tmp_path / "m.nii.gz"), is_label=True)
    assert mask.array.dtype == np.uint8 and np.array_equal(mask.array, labels)
    np.testing.assert_allclose(mask.affine, affine, atol=1e-5)


def test_loaded_map_takes_the_reference_geometry_and_rejects_another_grid(scene, image, tmp_path):
    array, affine = image
    reference = nodes.volume_node_from_array(array, affine, "mri", scene)
    path = write_nifti(tmp_path / "s.nii.gz", np.abs(array), affine)
    node = nodes.load_volume_node(path, "s", scene, reference_node=reference)
    np.testing.assert_array_equal(nodes.ijk_to_ras(node), nodes.ijk_to_ras(reference))
    other = write_nifti(tmp_path / "o.nii.gz", np.abs(array)[:-1], affine)
    with pytest.raises(InputError, match="does not match"):
        nodes.load_volume_node(other, "o", scene, reference_node=reference)


def test_conversions_leave_no_temporary_nodes_in_the_scene(scene):
    labels = knee_labels()
    affine = oblique_affine()
    volume = nodes.volume_node_from_array(labels.astype(np.float32), affine, "mri", scene)
    coarse = nodes.volume_node_from_array(labels[::2, ::2, ::2], affine @ np.diag([2, 2, 2, 1]), "c", scene,
                                          is_label=True)
    segmentation = nodes.segmentation_from_labelmap(labels, affine, "knee", scene)

    def ids():  # the subject hierarchy is Slicer's one singleton, made on first use
        return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())
                if not scene.GetNthNode(i).IsA("vtkMRMLSubjectHierarchyNode")}

    before = ids()
    nodes.labelmap_from_segmentation(segmentation, volume, scene)
    nodes.mask_array_for_volume(coarse, volume, scene)  # resampled through a temporary segmentation
    nodes.segmentation_from_labelmap(labels, affine, "knee", scene, node=segmentation)  # refilled in place
    assert ids() == before
