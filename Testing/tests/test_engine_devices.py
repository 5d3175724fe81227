"""Device choice and the out-of-memory message."""

import pytest
import torch

from kneeoa.engine.devices import autocast, oom_guard, resolve_device
from kneeoa.errors import ConfigError, JobError


def test_cpu_is_cpu():
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_falls_back_to_cpu_without_a_gpu():
    assert resolve_device("auto").type in {"cpu", "mps"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_says_so():
    with pytest.raises(ConfigError, match="no CUDA"):
        resolve_device("cuda")


def test_unknown_device_is_a_config_error():
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_out_of_memory_becomes_a_job_error_with_advice():
    with pytest.raises(JobError, match="--batch-size 2.*--device cpu"):
        with oom_guard(torch.device("cuda", 0), "training", batch_size=4):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_other_runtime_errors_pass_through():
    with pytest.raises(RuntimeError, match="shape"):
        with oom_guard(torch.device("cpu")):
            raise RuntimeError("shape mismatch")


def test_autocast_is_a_no_op_on_cpu():
    with autocast(torch.device("cpu"), "bf16"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
