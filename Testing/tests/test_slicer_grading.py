"""One grading run from MRML nodes: inputs written, the real `kneeoa grade` CLI run, outputs back as nodes."""

from __future__ import annotations

import numpy as np
import pytest
from slicer_helpers import fresh_scene, knee_labels, oblique_affine

from kneeoa.data.volume import read_volume
from kneeoa.errors import CheckpointError, JobError
from kneeoa.slicer import grading, jobs, nodes, results


@pytest.fixture
def scene():
    return fresh_scene()


@pytest.fixture
def knee(scene):
    labels = knee_labels()
    affine = oblique_affine()
    image = np.random.default_rng(1).normal(size=labels.shape).astype(np.float32) + labels
    volume = nodes.volume_node_from_array(image, affine, "oaizib_001_0000", scene)
    label_node = nodes.volume_node_from_array(labels, affine, "oaizib_001", scene, is_label=True)
    return volume, label_node, image, labels


def test_prepare_writes_inputs_on_the_volume_grid_and_a_command_the_cli_accepts(scene, knee, tmp_path):
    from kneeoa.cli import build_parser

    volume, label_node, image, labels = knee
    options = grading.GradingOptions(tmp_path / "m.safetensors", saliency_method="gradcam", target="kl",
                                     device="cpu")
    argv, files = grading.prepare(volume, options, tmp_path / "work", label_node, python="py")
    assert np.array_equal(read_volume(files.image).array, image)
    assert np.array_equal(read_volume(files.mask, is_label=True).array, labels)
    args = build_parser().parse_args(argv[3:])  # drop "py -m kneeoa"
    assert (args.command, args.progress, args.image, args.mask) == ("grade", "json", str(files.image), str(files.mask))
    assert (args.saliency_out, args.saliency_method, args.target, args.device) == \
        (str(files.saliency), "gradcam", "kl", "cpu")
    assert args.result_json == str(files.result_json)


def test_no_saliency_and_no_mask_leave_the_options_out(scene, knee, tmp_path):
    volume = knee[0]
    argv, files = grading.prepare(volume, grading.GradingOptions(tmp_path / "m", saliency_method="none"),
                                  tmp_path / "w", python="py")
    assert files.mask is None and files.saliency is None
    assert "--mask" not in argv and "--saliency-out" not in argv


def test_unknown_option_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        grading.GradingOptions(tmp_path / "m", device="tpu")


def test_missing_demo_checkpoint_names_where_it_was_expected(tmp_path):
    module_file = tmp_path / "qt-scripted-modules" / "KneeOAGrading.py"
    with pytest.raises(CheckpointError, match="demo model is missing") as err:
        grading.resolve_checkpoint(None, module_file)
    assert err.value.path == tmp_path / "qt-scripted-modules" / "Resources" / "demo_model.safetensors"
    source_checkout = tmp_path / "Resources" / "demo_model.safetensors"
    source_checkout.parent.mkdir()
    source_checkout.write_bytes(b"x")
    assert grading.resolve_checkpoint(None, module_file) == source_checkout
    with pytest.raises(CheckpointError, match="not found"):
        grading.resolve_checkpoint(tmp_path / "nope.safetensors", module_file)


def test_cartilage_is_found_by_oai_zib_cm_name_on_the_same_grid(scene, knee):
    volume, label_node, _, _ = knee
    nodes.volume_node_from_array(knee_labels(), np.eye(4), "oaizib_002", scene, is_label=True)
    assert grading.find_cartilage(volume, scene) is label_node
    other = nodes.volume_node_from_array(np.ones((4, 4, 4)), np.eye(4), "oaizib_002_0000", scene)
    assert grading.find_cartilage(other, scene) is None  # oaizib_002 labels lie on another grid


def test_gradable_volumes_skip_label_maps_and_our_saliency_maps(scene, knee):
    volume = knee[0]
    saliency = nodes.volume_node_from_array(np.ones((3, 3, 3)), np.eye(4), "sal", scene)
    saliency.SetAttribute(grading.OWNED_ATTRIBUTE, "1")
    assert grading.gradable_volumes(scene) == [volume]


def test_finish_without_result_file_is_a_job_error(scene, knee, tmp_path):
    files = grading.GradingFiles(tmp_path, tmp_path / "i.nii.gz", None, None, tmp_path / "result.json")
    with pytest.raises(JobError, match="wrote no result"):
        grading.finish(files, knee[0], scene=scene)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="resnet3d", variant="dual", input_shape=(16, 16, 16), width=4))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model, {"training_data": "untrained test model"})


@pytest.mark.slow
def test_grading_a_phantom_case_end_to_end_creates_the_result_nodes(scene, tiny_checkpoint, tmp_path):
    from kneeoa.data.phantom import generate_cohort

    generate_cohort(tmp_path / "cohort", n_train=1, n_test=0, shape=(24, 24, 24), seed=0, workers=1)
    volume = nodes.load_volume_node(tmp_path / "cohort/imagesTr/oaizib_001_0000.nii.gz", "oaizib_001_0000", scene)
    labels = nodes.load_volume_node(tmp_path / "cohort/labelsTr/oaizib_001.nii.gz", "oaizib_001", scene,
                                    is_label=True)
    events = []
    out = grading.grade(volume, grading.GradingOptions(tiny_checkpoint, device="cpu"), labels, scene,
                        on_event=events.append, env=jobs.job_environment(), timeout_s=300)
    assert len(out.kl_probs) == 5 and sum(out.kl_probs) == pytest.approx(1.0, abs=1e-4)
    assert out.pred_kl == int(np.argmax(out.kl_probs)) and 0.0 <= out.oa_prob <= 1.0
    assert out.card["training_data"] == "untrained test model"
    assert {"progress", "result"} <= {e["event"] for e in events}
    # Saliency on the MRI grid in [0, 1], cartilage outlined, table/chart made and kept on the volume
    assert nodes.same_grid(out.saliency_node, volume)
    saliency, _ = nodes.array_from_volume_node(out.saliency_node)
    assert saliency.min() >= 0.0 and 0.0 < saliency.max() <= 1.0
    assert out.cartilage_node.IsA("vtkMRMLSegmentationNode") and out.overlap is not None
    assert results.stored_result(volume)["pred_kl"] == out.pred_kl
    assert results.result_node(volume, results.ROLE_SALIENCY) is out.saliency_node
    assert results.table_rows(out.result_table_node)[0] == ["Predicted KL grade", str(out.pred_kl)]
    # Re-grading reuses the nodes instead of piling up new ones
    count = scene.GetNumberOfNodes()
    again = grading.grade(volume, grading.GradingOptions(tiny_checkpoint, device="cpu"), labels, scene,
                          env=jobs.job_environment(), timeout_s=300)
    assert again.saliency_node is out.saliency_node and again.result_table_node is out.result_table_node
    assert scene.GetNumberOfNodes() == count


def test_a_failing_grade_raises_the_cli_error(scene, knee, tmp_path):
    bad = tmp_path / "not_a_checkpoint.safetensors"
    bad.write_bytes(b"definitely not safetensors")
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(JobError, match="grading failed: .*not_a_checkpoint"):
        grading.grade(knee[0], grading.GradingOptions(bad, device="cpu"), scene=scene,
                      env=jobs.job_environment(), timeout_s=120)
    assert scene.GetNumberOfNodes() == nodes_before  # a failed job leaves the scene as it was


def test_model_card_is_read_from_the_header_without_torch(tiny_checkpoint, tmp_path):
    from kneeoa.models.checkpoint import read_card

    assert grading.read_card_header(tiny_checkpoint) == read_card(tiny_checkpoint)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # a well-formed header without metadata
    with pytest.raises(CheckpointError, match="no KneeOA model card"):
        grading.read_card_header(bad)
