import dataclasses

import numpy as np
import pytest
import torch

from augsearch.distill import train_student
from augsearch.errors import UserError
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import KDSettings
from augsearch.runtime import TEACHER_BF16_VARIABLE, Runtime, cpu_has_native_bf16, resolve
from augsearch.space import TrainSettings


def test_cpu_runtime_trains_in_fp32_channels_last_and_runs_the_teacher_in_native_bf16(monkeypatch):
    runtime = resolve("cpu")
    assert runtime.device.type == "cpu" and runtime.autocast_dtype is None and runtime.channels_last
    assert runtime.teacher_dtype == (torch.bfloat16 if cpu_has_native_bf16() else None)
    monkeypatch.setattr("augsearch.runtime.cpu_has_native_bf16", lambda: True)
    assert resolve("cpu").teacher_dtype == torch.bfloat16
    assert "teacher bfloat16" in resolve("cpu").describe()
    monkeypatch.setenv(TEACHER_BF16_VARIABLE, "0")
    assert resolve("cpu").teacher_dtype is None and "teacher" not in resolve("cpu").describe()
    monkeypatch.setenv(TEACHER_BF16_VARIABLE, "1")
    monkeypatch.setattr("augsearch.runtime.cpu_has_native_bf16", lambda: False)
    assert resolve("cpu").teacher_dtype is None


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 2), (8, 4)])
def test_cpu_loader_workers_only_where_cores_are_spare(monkeypatch, cores, workers):
    """Two cores are both busy with the models' step: augmenting between steps beat a worker (runtime.py)."""
    monkeypatch.setattr("augsearch.runtime.cpu_share", lambda: cores)
    assert resolve("cpu").loader_workers == workers
    assert resolve("cpu", 1).loader_workers == 1  # an explicit count is kept


def test_cuda_runtime_uses_bf16_channels_last_and_every_spare_core(monkeypatch):
    """Decided without a GPU: only the decision is tested here (torch.device("cuda") needs no card)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("augsearch.runtime.cpu_share", lambda: 16)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    flags = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)  # resolve sets them for CUDA
    try:
        runtime = resolve("auto")
    finally:  # (monkeypatch cannot undo matmul's flag: it is not a plain attribute)
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = flags
    assert runtime.device.type == "cuda" and runtime.channels_last and runtime.pin_memory
    assert runtime.autocast_dtype == runtime.teacher_dtype == torch.bfloat16
    assert runtime.loader_workers == 15


def test_teacher_autocast_is_the_teacher_precision_only():
    runtime = dataclasses.replace(resolve("cpu"), teacher_dtype=torch.bfloat16)
    layer = torch.nn.Linear(4, 2)
    with runtime.teacher_autocast():
        assert layer(torch.randn(3, 4)).dtype == torch.bfloat16
    with runtime.autocast():
        assert layer(torch.randn(3, 4)).dtype == torch.float32


def test_unknown_or_missing_device_is_a_user_error():
    with pytest.raises(UserError, match="unknown device"):
        resolve("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve("cuda")


def test_the_cuda_code_path_runs_on_cpu_with_bf16_and_channels_last():
    """The GPU settings (bf16 autocast, channels_last) exercised through the real training loop on CPU."""
    runtime = Runtime(torch.device("cpu"), torch.bfloat16, True, 0, False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 12, 12, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 64).astype(np.int64)
    normalise = Normaliser.fit(x, runtime)
    batch = normalise(torch.from_numpy(x[:8]))
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.dtype == torch.float32
    teacher = build_model("cnn-small", in_channels=3, num_classes=3, image_size=12)
    student = build_model("cnn-tiny", in_channels=3, num_classes=3, image_size=12)
    result = train_student(
        student,
        make_loader(x, y, None, 16, runtime, 0),
        TrainSettings(epochs=1),
        normalise,
        teacher,
        KDSettings(2.0, 0.5),
        evaluation=(x, y),
    )
    assert len(result.val_accuracy) == 1 and np.isfinite(result.train_loss[0])
