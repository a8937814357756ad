"""Device, precision, threads and seeding: decided here and nowhere else.

The training loop never asks which device it is on. It asks the :class:`Runtime` for an autocast
context and for a batch already on the device, normalised, in the memory format the models want.
On CUDA that means bf16 autocast and channels_last (bf16 needs no GradScaler, unlike fp16); on CPU
plain fp32, because CPU autocast slows these small convolutions down rather than speeding them up.
"""

from __future__ import annotations

import contextlib
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

    def autocast(self) -> contextlib.AbstractContextManager:
        """The one precision switch: bf16 autocast on CUDA, a no-op context on CPU."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        precision = "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return (
            f"{name} ({precision}, {torch.get_num_threads()} threads, {self.loader_workers} loader workers)"
        )


def resolve(device: str = "auto", loader_workers: int | None = None) -> Runtime:
    """Pick the device and everything that follows from it.

    ``auto`` takes CUDA when present. Loader workers default to one per spare core (at most 4): on a
    2-core CPU one worker augments while the main process trains on both cores' worth of threads.
    """
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if loader_workers is None:
        loader_workers = min(4, max(1, cores - 1)) if cores > 1 else 0
    if use_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return Runtime(torch.device("cuda"), torch.bfloat16, True, loader_workers, True)
    return Runtime(torch.device("cpu"), None, False, loader_workers, False)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that model initialisation and data order are repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
