"""The teacher's outputs on clean training images, reused for the images a policy left unchanged.

With a mild policy most images leave the pipeline byte for byte as they entered it (with ``none``, all
of them; the `full-labels` space's best policies apply two ops at low probability). The teacher's output on
such an image *is* its output on the clean image, so it is computed the first time training meets the
image unchanged, kept (N x classes floats: 2.4 MB for 60,000 images of 10 classes), and read back
whenever the image comes out unchanged again, instead of running the teacher once more. The teacher
then runs only on the images of a batch that changed.

This is not the per-sample cache of *augmented* outputs that KD frameworks get wrong (augmentation is
random, so a cached augmented output belongs to another image): an output is reused only for an image
whose pixels equal its source's (:func:`augsearch.loader.unchanged`), and a batch mixed by mixup or
CutMix counts as all changed. The kept outputs come from the very function training uses,
:func:`augsearch.distill.teacher_logits`, on the same normalised images; they equal a fresh pass on
the current batch up to float rounding, since the teacher then runs on a sub-batch and oneDNN may pick
other kernels for another batch size (tests/test_reuse.py measures and bounds that difference).

The kept outputs are keyed by everything that changes them: the teacher's weights and graph (folded
BatchNorms or not), the training images, the normaliser and the inference path (device, the teacher's
precision, memory format). Another teacher or path gets its own outputs, never another's.
``AUGSEARCH_TEACHER_REUSE=0`` (:mod:`augsearch.runtime`) turns the reuse off.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from augsearch.loader import Normaliser

Run = Callable[[torch.Tensor], torch.Tensor]  # the teacher's logits for a normalised batch


class CleanOutputs:
    """The teacher's logits on the clean images of one array, filled as training meets them unchanged."""

    def __init__(self, key: tuple, count: int) -> None:
        self.key = key
        self.known = np.zeros(count, dtype=bool)
        self.logits: torch.Tensor | None = None  # (count, classes) on the device, made at the first store

    def targets(
        self, images: torch.Tensor, indices: np.ndarray, unchanged: np.ndarray, run: Run
    ) -> tuple[torch.Tensor, int]:
        """The teacher's logits for a normalised batch, and how many of them were reused.

        ``indices`` are the batch's rows in the array these outputs belong to, ``unchanged`` which
        images the policy left as they were. Kept outputs serve the unchanged images already seen;
        ``run`` (the teacher) computes the rest, and its outputs on unchanged images are kept.
        """
        reuse = unchanged & self.known[indices]
        if not reuse.any():
            fresh = run(images)
            self._keep(fresh, indices, unchanged)
            return fresh, 0
        assert self.logits is not None
        device = self.logits.device
        if reuse.all():
            return self.logits[torch.from_numpy(indices).to(device)], len(indices)
        todo = np.flatnonzero(~reuse)
        fresh = run(images[torch.from_numpy(todo).to(images.device)])  # keeps channels_last
        out = torch.empty((len(indices), fresh.shape[1]), dtype=fresh.dtype, device=device)
        out[torch.from_numpy(todo).to(device)] = fresh
        out[torch.from_numpy(np.flatnonzero(reuse)).to(device)] = self.logits[
            torch.from_numpy(indices[reuse]).to(device)
        ]
        self._keep(fresh, indices[todo], unchanged[todo])
        return out, int(reuse.sum())

    def fill(self, x: np.ndarray, normalise: Normaliser, batch_size: int, run: Run) -> None:
        """Compute every image's clean output now, in order, in batches of ``batch_size`` (the bench
        uses it to measure the steady state of a study, whose trials share the outputs)."""
        for start in range(0, len(x), batch_size):
            rows = np.arange(start, min(start + batch_size, len(x)))
            self.targets(normalise(torch.from_numpy(x[rows])), rows, np.ones(len(rows), bool), run)

    def _keep(self, fresh: torch.Tensor, indices: np.ndarray, unchanged: np.ndarray) -> None:
        new = unchanged & ~self.known[indices]
        if not new.any():
            return
        if self.logits is None:
            shape = (len(self.known), fresh.shape[1])
            self.logits = torch.zeros(shape, dtype=fresh.dtype, device=fresh.device)
        rows = torch.from_numpy(indices[new]).to(fresh.device)
        self.logits[rows] = fresh[torch.from_numpy(np.flatnonzero(new)).to(fresh.device)]
        self.known[indices[new]] = True


def key(teacher: nn.Module, x: np.ndarray, normalise: Normaliser) -> tuple:
    """What the teacher's clean outputs on ``x`` depend on; equal keys give equal outputs."""
    runtime = normalise.runtime
    return (
        _teacher_digest(teacher),
        _array_digest(x),
        tuple(normalise.mean.flatten().tolist()),
        tuple(normalise.std.flatten().tolist()),
        str(runtime.device),
        str(runtime.teacher_dtype),
        runtime.channels_last,
    )


def _teacher_digest(teacher: nn.Module) -> str:
    """The teacher's class, its traced graph if it has one (BatchNorms folded or not), and its weights."""
    digest = hashlib.blake2b(type(teacher).__qualname__.encode(), digest_size=16)
    digest.update(str(getattr(teacher, "code", "")).encode())
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _array_digest(x: np.ndarray) -> str:
    digest = hashlib.blake2b(f"{x.shape}{x.dtype}".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(x).data)
    return digest.hexdigest()


_KEPT: OrderedDict[tuple, CleanOutputs] = OrderedDict()
_KEEP = 2  # a study's trial subset and its full training split; older ones are dropped


def clean_outputs(teacher: nn.Module | None, x: np.ndarray, normalise: Normaliser) -> CleanOutputs | None:
    """The kept clean outputs of ``teacher`` on ``x`` (new and empty the first time), shared by every
    run of this process with the same key; None without a teacher or with the reuse turned off."""
    if teacher is None or not normalise.runtime.teacher_reuse:
        return None
    found = key(teacher, x, normalise)
    if found not in _KEPT:
        _KEPT[found] = CleanOutputs(found, len(x))
        while len(_KEPT) > _KEEP:
            _KEPT.popitem(last=False)
    _KEPT.move_to_end(found)
    return _KEPT[found]
