import numpy as np
import pytest
import torch

from augsearch.distill import train_student
from augsearch.errors import UserError
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import KDSettings
from augsearch.runtime import Runtime, resolve
from augsearch.space import TrainSettings


def test_cpu_runtime_is_fp32_and_contiguous():
    runtime = resolve("cpu")
    assert runtime.device.type == "cpu" and runtime.autocast_dtype is None and not runtime.channels_last


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
