"""Knowledge distillation: the loss, the training loop of a student, and evaluation.

The teacher and the student see the same augmented batch at every step, and the teacher's outputs
are computed afresh for that batch (never cached per sample: augmentation is random, so a cached
output would belong to a different image), except on the images the policy left byte for byte
unchanged, whose outputs are the clean image's and are reused (:mod:`augsearch.reuse`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import fuse

from augsearch import files, progress
from augsearch.control import StrengthControl
from augsearch.fusion import available as fusion_available
from augsearch.fusion import fuse_conv_relu
from augsearch.loader import Normaliser, plain_batches
from augsearch.mixing import MixSettings, mix_batch
from augsearch.policy import KDSettings
from augsearch.reuse import CleanOutputs
from augsearch.runtime import Runtime
from augsearch.settings import TrainSettings
from augsearch.synthesis import Synthesizer


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; training this configuration further is pointless."""


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> dict[str, torch.Tensor]:
    """Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network":

        L = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)

    The T² factor keeps the soft-target gradients on the same scale as the hard-target ones when T
    changes (section 2 of the paper). KL is averaged over the batch. Returns the parts so that a
    caller can log each; ``total`` is the one to differentiate. With ``alpha == 0`` or no teacher
    it is plain cross-entropy.
    """
    student_logits = student_logits.float()
    ce = F.cross_entropy(student_logits, targets)
    if teacher_logits is None or alpha == 0:
        return {"total": ce, "kd": torch.zeros_like(ce), "ce": ce}
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits.float() / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    kd = kl * temperature**2
    return {"total": alpha * kd + (1 - alpha) * ce, "kd": kd, "ce": ce}


_MASKED = -1e9  # a logit that softmax turns into an exact 0 in float32, without the NaNs of -inf


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float,
) -> dict[str, torch.Tensor]:
    """Decoupled Knowledge Distillation: Zhao, Cui, Song, Qiu & Liang, CVPR 2022, "Decoupled Knowledge
    Distillation" (arXiv:2203.08679). With p = softmax(z/T) over the classes and t the label:

        b = [p_t, 1 − p_t]                              the binary target / non-target probabilities
        p̂_i = p_i / (1 − p_t) for i ≠ t                 the non-target classes, renormalised
        TCKD = T² · KL(b^teacher ‖ b^student)           target-class knowledge distillation
        NCKD = T² · KL(p̂^teacher ‖ p̂^student)           non-target-class knowledge distillation
        L = CE(s, y) + α · TCKD + β · NCKD

    The paper shows classical KD = TCKD + (1 − p_t^teacher) · NCKD, so NCKD's weight shrinks exactly
    when the teacher is confident; DKD frees the two weights. KLs are summed over classes and
    averaged over the batch, as in the authors' code (megvii-research/mdistiller,
    ``mdistiller/distillers/DKD.py``, ``dkd_loss``; its defaults in ``mdistiller/engine/cfg.py``:
    CE weight 1, α = 1, β = 8, T = 4). We compute the logs stably (log-sum-exp instead of
    ``log(p)``) and leave out mdistiller's linear warm-up of the KD part over its first 20 epochs:
    a trial here lasts a few epochs. Returns total, kd (α·TCKD + β·NCKD), ce, tckd and nckd.
    """
    student_logits = student_logits.float()
    ce = F.cross_entropy(student_logits, targets)
    target_mask = F.one_hot(targets, student_logits.shape[1]).bool()

    def log_parts(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = logits.float() / temperature
        log_all = torch.logsumexp(scaled, dim=1, keepdim=True)
        others = scaled.masked_fill(target_mask, _MASKED)
        log_target = scaled.gather(1, targets[:, None]) - log_all
        log_binary = torch.cat([log_target, torch.logsumexp(others, 1, keepdim=True) - log_all], dim=1)
        return log_binary, F.log_softmax(others, dim=1)  # log b, log p̂ (the target's entry ~ −1e9)

    student_binary, student_others = log_parts(student_logits)
    teacher_binary, teacher_others = log_parts(teacher_logits)

    def kl(log_student: torch.Tensor, log_teacher: torch.Tensor) -> torch.Tensor:
        return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2

    tckd, nckd = kl(student_binary, teacher_binary), kl(student_others, teacher_others)
    kd = alpha * tckd + beta * nckd
    return {"total": ce + kd, "kd": kd, "ce": ce, "tckd": tckd, "nckd": nckd}


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    kd: KDSettings | None,
    targets_b: torch.Tensor | None = None,
    lam: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The loss ``kd`` names (the one place that dispatches on ``kd.loss``); cross-entropy alone when
    there is no teacher output or no KD settings.

    A batch mixed by :func:`augsearch.mixing.mix_batch` has two label sets: every part is then
    ``lam · loss(targets) + (1 − lam) · loss(targets_b)``, mixup's own criterion (Zhang et al. 2018,
    facebookresearch/mixup-cifar10 ``mixup_criterion``; CutMix, Yun et al. 2019, does the same). The
    teacher's logits are computed on the mixed images (function matching, Beyer et al. 2022), so
    Hinton's KD term, which reads no label, comes out unchanged: α·KD + (1 − α)·(λ·CE_a + (1 − λ)·CE_b).
    DKD's split into target and non-target classes needs *a* target class, and a mixed image has
    two; we take λ·DKD(y_a) + (1 − λ)·DKD(y_b), each with its own TCKD/NCKD split, the same
    linear-in-the-label rule as the cross-entropy (Zhao et al. 2022 define DKD for one label only;
    this is our extension, not the paper's). With ``lam == 1`` (or no ``targets_b``) the loss is the
    unmixed one, computed once.
    """
    if targets_b is None or lam == 1.0:
        return _loss(student_logits, teacher_logits, targets, kd)
    part_a = _loss(student_logits, teacher_logits, targets, kd)
    part_b = _loss(student_logits, teacher_logits, targets_b, kd)
    return {key: lam * part_a[key] + (1 - lam) * part_b[key] for key in part_a}


def _loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    kd: KDSettings | None,
) -> dict[str, torch.Tensor]:
    if teacher_logits is None or kd is None:
        return hinton_loss(student_logits, None, targets, 1.0, 0.0)
    if kd.loss == "dkd":
        return dkd_loss(student_logits, teacher_logits, targets, kd.temperature, kd.alpha, kd.beta or 0.0)
    if kd.loss == "hinton":
        return hinton_loss(student_logits, teacher_logits, targets, kd.temperature, kd.alpha)
    raise ValueError(f"unknown KD loss {kd.loss!r}")


def real_only_cross_entropy(
    loss: dict[str, torch.Tensor],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    kd: KDSettings | None,
    targets_b: torch.Tensor | None,
    lam: float,
    real: int,
) -> dict[str, torch.Tensor]:
    """``loss`` (over a batch whose first ``real`` images are real, the rest synthetic) with its
    cross-entropy term read on the real images only: synthetic images then teach through the KD term
    alone (``synthesis.hard_labels: false``). The CE term's weight in the total is 1 − α for Hinton's
    loss and 1 for DKD's and for plain cross-entropy (no teacher: synthetic images then teach nothing)."""
    part = distillation_loss(
        student_logits[:real],
        None if teacher_logits is None else teacher_logits[:real],
        targets[:real],
        kd,
        None if targets_b is None else targets_b[:real],
        lam,
    )
    weight = 1 - kd.alpha if kd is not None and teacher_logits is not None and kd.loss == "hinton" else 1.0
    return loss | {"total": loss["total"] + weight * (part["ce"] - loss["ce"]), "ce": part["ce"]}


def teacher_logits(teacher: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """The frozen teacher's logits for this very batch, under inference mode, in the teacher's precision."""
    with torch.inference_mode(), runtime.teacher_autocast():
        logits = teacher(images)
    return logits.float().clone()  # a normal tensor again, usable in the student's autograd graph


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (BatchNorm uses its running statistics) and no gradients: a teacher."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def inference_teacher(model: nn.Module, runtime: Runtime) -> nn.Module:
    """A frozen copy of ``model`` for distillation: each BatchNorm that follows a conv folded into it.

    A frozen BatchNorm is an affine map per channel, so it folds into the conv's weights and bias
    (Ioffe & Szegedy 2015, Alg. 2; torch.fx's ``fuse`` does it): the same logits up to float
    rounding (about 1e-6 relative) with one pass over the activations less per conv, 1.6x faster
    for cnn-teacher on CPU. ``model``'s weights are left as they are (it is the one saved and
    evaluated). A model torch.fx cannot trace (data-dependent control flow, some torchvision nets)
    is not copied: it is returned itself, frozen and on the device, unfolded.

    On CPU in fp32 each conv that feeds a ReLU is then fused with it (:mod:`augsearch.fusion`).
    """
    frozen = freeze(model)
    try:
        folded = freeze(fuse(frozen))
    except Exception:  # torch.fx tracing fails on data-dependent control flow; folding is only a speed-up
        folded = frozen
    if folded is not frozen and lean_graph(runtime):
        folded = freeze(fuse_conv_relu(folded))
    return folded.to(runtime.device, memory_format=runtime.memory_format)


def lean_graph(runtime: Runtime) -> bool:
    """Whether the teacher's convs and ReLUs are fused: on CPU in fp32 only (augsearch/fusion.py)."""
    return runtime.device.type == "cpu" and runtime.teacher_dtype is None and fusion_available()


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, normalise: Normaliser, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` on un-augmented images."""
    return predict(model, x, y, normalise, batch_size)[0]


@torch.inference_mode()
def predict(
    model: nn.Module, x: np.ndarray, y: np.ndarray, normalise: Normaliser, batch_size: int = 1000
) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of ``model`` on un-augmented images and its softmax probabilities, (N, classes)
    float64: what calibration (augsearch/stats.py: ECE, NLL) is computed from."""
    was_training = model.training
    model.eval()
    correct, probabilities = 0, []
    for images, labels in plain_batches(x, y, batch_size):
        with normalise.runtime.autocast():
            logits = model(normalise(images))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu().double().numpy())
    model.train(was_training)
    stacked = np.concatenate(probabilities) if probabilities else np.zeros((0, 0))
    return correct / max(1, len(y)), stacked


@dataclass
class TrainResult:
    """What one training run measured; ``val_accuracy`` has one entry per report (per evaluated epoch, or
    ``reports_per_epoch`` per epoch, or one per ``epochs_per_report`` epochs).
    ``mixed_batches`` of ``batches`` were mixed (mixup/CutMix), counted over the epochs trained. Of the
    ``teacher_images`` images the teacher's outputs were needed for, ``teacher_saved`` were reused
    clean-image outputs (:mod:`augsearch.reuse`): teacher passes saved."""

    val_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    batches: int = 0
    mixed_batches: int = 0
    teacher_images: int = 0
    teacher_saved: int = 0
    strength: list[float] = field(default_factory=list)  # mean strength per epoch (augsearch/control.py)
    synthetic_images: int = 0  # of ``images``, how many were synthetic (augsearch/synthesis.py)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def teacher_saved_share(self) -> float | None:
        """The share of teacher passes the reuse saved; None when the teacher never ran."""
        return self.teacher_saved / self.teacher_images if self.teacher_images else None


def make_optimiser(
    model: nn.Module, settings: TrainSettings, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum and a per-step one-cycle (Smith & Topin 2019) or cosine schedule."""
    optimiser = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=0.9, nesterov=True, weight_decay=settings.weight_decay
    )
    if settings.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=settings.lr, total_steps=max(1, steps)
        )
    else:
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps))
    return optimiser, schedule


def train_student(
    student: nn.Module,
    batches,
    settings: TrainSettings,
    normalise: Normaliser,
    teacher: nn.Module | None = None,
    kd: KDSettings | None = None,
    evaluation: tuple[np.ndarray, np.ndarray] | None = None,
    on_report: Callable[[int, float], None] | None = None,
    description: str = "train",
    checkpoint: Path | None = None,
    mix: MixSettings | None = None,
    mix_seed: int | None = None,
    clean: CleanOutputs | None = None,
    control: StrengthControl | None = None,
    synthesis: Synthesizer | None = None,
) -> TrainResult:
    """Train ``student`` for ``settings.epochs`` epochs over ``batches`` (a loader of uint8 batches).

    With a teacher and a KD term of non-zero weight the loss is the one ``kd.loss`` names
    (:func:`distillation_loss`); otherwise cross-entropy and the teacher is never run. After each
    epoch the student is evaluated on ``evaluation`` (if given) and ``on_report(step, accuracy)`` is
    called with the reports made so far (1, 2, ...), which may raise to stop (Optuna's pruning). With
    ``settings.reports_per_epoch`` r > 1 it is evaluated r times an epoch, after every 1/r of its batches:
    a pruner then judges a trial on fewer images (successive halving's first rung, Li et al. 2020).
    With ``settings.epochs_per_report`` K > 1 it is evaluated only after every K-th epoch and the last.
    Raises :class:`NonFiniteLoss` within a few steps of a loss turning NaN or infinite.

    With ``checkpoint``, the student, optimiser and schedule state and the history so far are saved
    there (atomically) after every epoch, and a run finding that file resumes after its last epoch:
    a killed run loses at most one epoch and ends with the same number of epochs and the same schedule.
    (The data order after a resume is drawn afresh; it is not replayed.)

    With ``mix`` (mixup or CutMix, :mod:`augsearch.mixing`) each normalised batch is mixed before the
    teacher and the student see it, and the loss uses both label sets (:func:`distillation_loss`).
    The draws come from a generator of their own, seeded with ``mix_seed``, or else with
    ``torch.initial_seed()`` (the last ``torch.manual_seed``, e.g. :func:`augsearch.runtime.seed_everything`)
    offset so that it does not replay the stream that initialised the model: the same seed, the same
    mixed batches. The draws are made on the CPU, so mixing adds no host sync. After a resume they
    restart from the seed, like the data order.

    With ``clean`` (:func:`augsearch.reuse.clean_outputs` for the loader's images) the teacher runs only
    on the images of a batch that the policy changed; the others get their kept clean-image outputs.
    That needs batches that say which images are unchanged (:class:`augsearch.loader.Batch`); a plain
    ``(images, labels)`` batch, and a mixed one, runs the teacher on every image.

    With ``control`` (a strength schedule driving the loader's shared strength, augsearch/control.py)
    the strength is set before each epoch and, for an adaptive schedule, moved by the controller from
    the teacher-student signal on the augmented batch; the mean strength of each epoch is recorded in
    ``result.strength``. Without it nothing of this runs and ``result.strength`` stays empty.

    With ``synthesis`` (:mod:`augsearch.synthesis`) synthetic images are appended to every batch
    before mixing; the teacher always runs on them afresh, and with ``hard_labels`` off the
    cross-entropy term reads only the real images (:func:`real_only_cross_entropy`).
    """
    runtime = normalise.runtime
    student.to(runtime.device, memory_format=runtime.memory_format).train()
    use_teacher = teacher is not None and kd is not None and kd.distils
    if use_teacher:
        freeze(teacher.to(runtime.device, memory_format=runtime.memory_format))
    optimiser, schedule = make_optimiser(student, settings, settings.epochs * len(batches))
    mixing = mix if mix is not None and mix.active else None
    generator = torch.Generator()
    generator.manual_seed(torch.initial_seed() ^ _MIX_SALT if mix_seed is None else mix_seed)
    run = partial(teacher_logits, teacher, runtime=runtime)
    result = TrainResult()
    first = _resume(checkpoint, student, optimiser, schedule, result, runtime) if checkpoint else 0
    for epoch in range(first, settings.epochs):
        if hasattr(batches, "set_epoch"):  # a loader that draws each epoch from (seed, epoch): replays
            batches.set_epoch(epoch)
        if control is not None:
            control.begin_epoch(epoch, settings.epochs, result.strength)
        start = time.perf_counter()
        running, count = torch.zeros((), device=runtime.device), 0
        kd_now = None if kd is None else kd.at_epoch(epoch, settings.epochs)  # T's schedule; constant: kd
        steps = progress.bar(batches, desc=f"{description} epoch {epoch + 1}/{settings.epochs}", leave=False)
        midway = _midway(len(batches), settings.reports_per_epoch) if evaluation is not None else {}
        for step, (images, labels, *where) in enumerate(steps):
            images, labels = normalise(images), labels.to(runtime.device, non_blocking=True)
            labels_b, lam, reusable = None, 1.0, clean is not None and len(where) == 2
            real = len(labels)
            if synthesis is not None:
                extra, extra_labels = synthesis.draw(real)
                if len(extra_labels):
                    images, labels = torch.cat([images, normalise(extra)]), torch.cat([labels, extra_labels])
                    result.synthetic_images += len(extra_labels)
            if mixing is not None:
                mixed = mix_batch(images, labels, mixing, generator)
                images, labels_b, lam = mixed.images, mixed.labels_b, mixed.lam
                result.mixed_batches += int(mixed.applied)
                reusable = reusable and not mixed.applied  # a mixed image is a changed image
            targets = None
            if use_teacher:
                if reusable and real < len(labels):  # the real images may reuse, the synthetic never
                    targets, saved = clean.targets(images[:real], where[0].numpy(), where[1].numpy(), run)
                    targets = torch.cat([targets, run(images[real:])])
                    result.teacher_saved += saved
                elif reusable:
                    targets, saved = clean.targets(images, where[0].numpy(), where[1].numpy(), run)
                    result.teacher_saved += saved
                else:
                    targets = run(images)
                result.teacher_images += len(labels)
            with runtime.autocast():
                logits = student(images)
            loss = distillation_loss(logits, targets, labels, kd_now if use_teacher else None, labels_b, lam)
            if real < len(labels) and not synthesis.settings.hard_labels:
                loss = real_only_cross_entropy(
                    loss, logits, targets, labels, kd_now if use_teacher else None, labels_b, lam, real
                )
            optimiser.zero_grad(set_to_none=True)
            loss["total"].backward()
            optimiser.step()
            schedule.step()
            if control is not None:
                control.observe(logits, targets, loss["kd"])
            running += loss["total"].detach() * len(labels)
            count += len(labels)
            result.batches += 1
            if step % _CHECK_EVERY == 0:  # a host sync: not every step, which would stall a GPU
                _check_finite(running, epoch)
            if step + 1 in midway:  # a report within the epoch (reports_per_epoch > 1); the last is below
                accuracy = evaluate(student, *evaluation, normalise)
                result.val_accuracy.append(accuracy)
                done = epoch + midway[step + 1]
                progress.line(f"{description} epoch {done:g}/{settings.epochs}: val accuracy {accuracy:.4f}")
                if on_report is not None:
                    on_report(len(result.val_accuracy), accuracy)
        _check_finite(running, epoch)
        result.seconds += time.perf_counter() - start
        result.images += count
        result.train_loss.append(running.item() / max(1, count))
        if control is not None:
            result.strength.append(control.end_epoch())
        if checkpoint is not None:
            _save(checkpoint, epoch + 1, student, optimiser, schedule, result)
        said = f"{description} epoch {epoch + 1}/{settings.epochs}: train loss {result.train_loss[-1]:.4f}"
        if evaluation is not None and settings.validates_after(epoch):
            accuracy = evaluate(student, *evaluation, normalise)
            result.val_accuracy.append(accuracy)
            progress.line(f"{said}, val accuracy {accuracy:.4f}")
            if on_report is not None:
                on_report(len(result.val_accuracy), accuracy)
        else:
            progress.line(said)
    return result


def _midway(batches: int, reports: int) -> dict[int, float]:
    """The batch counts within an epoch after which a report falls, other than the epoch's end, each
    with the fraction of the epoch done: {2: 0.5} for 4 batches and 2 reports."""
    counts = {round(batches * k / reports): k / reports for k in range(1, reports)}
    return {count: done for count, done in counts.items() if 0 < count < batches}


_CHECK_EVERY = 16
_MIX_SALT = 0x6D6978  # "mix": the mixing stream is not the one torch.manual_seed started


def _save(path: Path, epochs_done: int, model: nn.Module, optimiser, schedule, result: TrainResult) -> None:
    files.save_torch(
        path,
        {
            "epochs_done": epochs_done,
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(),
            "result": {
                "val_accuracy": result.val_accuracy,
                "train_loss": result.train_loss,
                "seconds": result.seconds,
                "images": result.images,
                "batches": result.batches,
                "mixed_batches": result.mixed_batches,
                "teacher_images": result.teacher_images,
                "teacher_saved": result.teacher_saved,
                "strength": result.strength,
                "synthetic_images": result.synthetic_images,
            },
        },
    )


def _resume(path: Path, model: nn.Module, optimiser, schedule, result: TrainResult, runtime: Runtime) -> int:
    """Load a checkpoint written by :func:`_save` if there is one; returns the first epoch still to run.

    A checkpoint that cannot be used (truncated, not a zip, other keys or shapes: a disk that filled
    up, a file from another model) would otherwise stop every later attempt until someone deleted it
    by hand. It is moved aside to ``<name>.corrupt`` (kept for a post-mortem), one line says so on
    stderr, and the run starts from scratch with the model, optimiser and schedule as they were.
    """
    if not path.is_file():
        return 0
    fresh = {key: value.detach().clone() for key, value in model.state_dict().items()}
    fresh_optimiser = copy.deepcopy(optimiser.state_dict())
    fresh_schedule = copy.deepcopy(schedule.state_dict())
    try:
        state = torch.load(path, map_location=runtime.device, weights_only=True)
        history = dict(state["result"])
        unknown = set(history) - {item.name for item in fields(TrainResult)}
        if unknown:
            raise KeyError(f"unknown result keys {sorted(unknown)}")
        epochs_done = int(state["epochs_done"])
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
    except Exception as error:  # torch/zipfile/pickle raise many kinds; all mean "not usable"
        model.load_state_dict(fresh)
        optimiser.load_state_dict(fresh_optimiser)
        schedule.load_state_dict(fresh_schedule)
        files.set_aside(path, error)
        return 0
    for key, value in history.items():
        setattr(result, key, value)
    return epochs_done


def _check_finite(running: torch.Tensor, epoch: int) -> None:
    value = running.item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"training loss became {value} in epoch {epoch + 1}")
