"""Device, precision, threads and seeding: decided here and nowhere else (also for each of several workers).

The training loop never asks which device it is on. It asks the :class:`Runtime` for an autocast
context and for a batch already on the device, normalised, in the memory format the models want.
On CUDA that means bf16 autocast and channels_last (bf16 needs no GradScaler, unlike fp16). On CPU:
channels_last too (oneDNN's convolutions run 1.2x faster on it, measured for cnn-tiny and resnet8x4
training steps), the student in fp32 (bf16 autocast gave its step nothing here), and the frozen
teacher's inference in bf16 where the CPU has native bf16 (AVX512-BF16 or AMX): 1.5x faster on
cnn-teacher, logits within about 0.5% of fp32. ``AUGSEARCH_TEACHER_BF16=0`` keeps that teacher in fp32.
On every device the teacher's outputs on images a policy left unchanged are reused (augsearch/reuse.py);
``AUGSEARCH_TEACHER_REUSE=0`` runs the teacher on every image instead, for an A/B measurement.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from augsearch.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed. Built once by :func:`resolve` and passed down."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    loader_workers: int
    pin_memory: bool
    teacher_dtype: torch.dtype | None = None
    teacher_reuse: bool = True  # reuse the teacher's clean-image outputs on unchanged images (reuse.py)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision of training and evaluation: bf16 autocast on CUDA, a no-op context on CPU."""
        return _autocast(self.device, self.autocast_dtype)

    def teacher_autocast(self) -> contextlib.AbstractContextManager:
        """The precision of the frozen teacher's inference during distillation (see the module docstring)."""
        return _autocast(self.device, self.teacher_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        precision, teacher = _dtype_name(self.autocast_dtype), _dtype_name(self.teacher_dtype)
        if teacher != precision:
            precision += f", teacher {teacher}"
        if not self.teacher_reuse:
            precision += ", no teacher reuse"
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return (
            f"{name} ({precision}, {torch.get_num_threads()} threads, {self.loader_workers} loader workers)"
        )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _dtype_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def resolve(device: str = "auto", loader_workers: int | None = None) -> Runtime:
    """Pick the device and everything that follows from it.

    ``auto`` takes CUDA when present. Loader workers: on CUDA one per spare core, every one of them,
    since the GPU computes while the cores augment and augmentation is what bounds a small student
    there. On a CPU of two cores or fewer, none: the models' step already fills both cores, and a
    worker augmenting beside it made the `full-labels` space's trial step slower than augmenting in the
    main process between steps (``augsearch bench --loader-workers 1``, README), its work contending
    with torch's threads. Larger CPUs keep one worker per spare core, at most 4; not measured here.
    """
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    reuse = os.environ.get(TEACHER_REUSE_VARIABLE, "1") != "0"
    cores = cpu_share()
    if THREADS_VARIABLE in os.environ:  # one of several workers: its share of the cores, no more
        torch.set_num_threads(cores)
    if loader_workers is None:
        loader_workers = cores - 1 if use_cuda else (min(4, cores - 1) if cores > 2 else 0)
    if use_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return Runtime(
            torch.device("cuda"), torch.bfloat16, True, loader_workers, True, torch.bfloat16, reuse
        )
    teacher_bf16 = os.environ.get(TEACHER_BF16_VARIABLE, "1") != "0" and cpu_has_native_bf16()
    teacher_dtype = torch.bfloat16 if teacher_bf16 else None
    return Runtime(torch.device("cpu"), None, True, loader_workers, False, teacher_dtype, reuse)


TEACHER_BF16_VARIABLE = "AUGSEARCH_TEACHER_BF16"  # "0": the teacher's inference on CPU stays in fp32
TEACHER_REUSE_VARIABLE = "AUGSEARCH_TEACHER_REUSE"  # "0": the teacher runs on every image (reuse.py off)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the check: assume not
        return False


THREADS_VARIABLE = "AUGSEARCH_THREADS"  # set by `run --workers K` for each worker: its share of the cores


def cpu_share() -> int:
    """The cores this process may use: all it is allowed, or its share when it is one of several workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = os.environ.get(THREADS_VARIABLE, "")
    return max(1, min(cores, int(share))) if share.isdigit() else cores


def visible_gpus(device: str) -> list[str]:
    """The CUDA devices the workers may be spread over (ids as CUDA_VISIBLE_DEVICES names them)."""
    if device == "cpu":
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [name.strip() for name in listed.split(",") if name.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def worker_environments(
    count: int, base: dict[str, str], gpus: list[str], cores: int
) -> list[dict[str, str]]:
    """The environment of each of ``count`` worker processes on one machine.

    With several GPUs visible, each worker sees one (round robin when there are more workers than
    GPUs), so each trains on its own card; with one GPU they share it. The CPU cores are split evenly:
    each worker's torch, OpenMP and MKL threads and its loader workers (see :func:`resolve`) fit in
    ``cores // count``, since K processes each using every core slow each other down far more than K×.
    """
    share = str(max(1, cores // count))
    environments = []
    for index in range(count):
        env = dict(base) | {THREADS_VARIABLE: share, "OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share}
        env["AUGSEARCH_WORKER_INDEX"] = str(index)
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        environments.append(env)
    return environments


def release_memory() -> None:
    """Give back what a failed trial held (CUDA out of memory): collect its tensors, empty CUDA's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that model initialisation and data order are repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
