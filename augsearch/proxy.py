"""A zero-cost, teacher-only proxy of how good a policy is for distillation: "T. stddev".

Wang, Lohit, Jones & Fu, NeurIPS 2022, "What Makes a 'Good' Data Augmentation in Knowledge
Distillation – A Statistical Perspective" (arXiv:2012.02909): a good augmentation lowers the
covariance of the teacher-student cross-entropy (their Proposition 3.1), and its practical stand-in is
the *standard deviation of the teacher's mean probability* (T. stddev). Their code
(github.com/MingSun-Tse/Good-DA-in-KD, ``helper/loops.py``, option ``--utils.check_ce_var``) computes
it as: softmax the teacher's logits (T = 1) on augmented training batches; average the probability
vectors over a group of samples (one vector of C class probabilities per group); take the standard
deviation of those mean vectors across groups, per class (``torch.std``, n - 1); average over the
C classes. Their Figure 1 finds the student's test loss rising with T. stddev across augmentation
schemes (Pearson 0.96 on CIFAR-100, wrn-40-2 -> wrn-16-2): **lower T. stddev is better**, so the
"worst" policies are those with the *highest* values.

Here a group is one augmented batch of the trial's batch size (they used 5 to 10 batches of 64 per
group over an epoch; a few batches keep the proxy at a fraction of a second per trial). Every policy
is scored on the same images with the same seed (common random numbers), so differences come from
the policy, not from which images were drawn.
"""

from __future__ import annotations

import time

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn

from augsearch.attributes import PROXY_SECONDS, PROXY_STDDEV, PRUNED_REASON
from augsearch.distill import freeze, teacher_logits
from augsearch.loader import Normaliser, augment
from augsearch.settings import ProxySettings


def teacher_stddev(
    teacher: nn.Module, images: np.ndarray, transform, normalise: Normaliser, batch_size: int
) -> float:
    """T. stddev of ``transform`` on ``images`` (uint8 N,H,W,C), split in order into batches.

    Needs at least two whole batches (a standard deviation of one group is undefined); a trailing
    partial batch is dropped so that every group averages the same number of samples.
    """
    groups = len(images) // batch_size
    if groups < 2:
        raise ValueError(f"T. stddev needs at least 2 batches of {batch_size}, got {len(images)} images")
    runtime = normalise.runtime
    freeze(teacher.to(runtime.device, memory_format=runtime.memory_format))
    means = []
    for group in range(groups):
        batch = augment(images[group * batch_size : (group + 1) * batch_size], transform)
        logits = teacher_logits(teacher, normalise(torch.from_numpy(batch)), runtime)
        means.append(F.softmax(logits.double(), dim=1).mean(dim=0))
    return torch.stack(means).std(dim=0).mean().item()


def proxy_images(x: np.ndarray, batches: int, batch_size: int, seed: int) -> np.ndarray:
    """The fixed, seeded images every policy's proxy is computed on (fewer if ``x`` is small)."""
    count = min(len(x), batches * batch_size)
    return x[np.sort(np.random.default_rng(seed).choice(len(x), size=count, replace=False))]


def in_worst_fraction(value: float, seen: list[float], fraction: float, startup: int) -> bool:
    """Whether ``value`` is among the highest (worst) ``fraction`` of the T. stddev values ``seen``.

    False until ``startup`` values have been seen, so the first policies are never skipped on a
    threshold made of one or two numbers. The threshold is the (1 - fraction) quantile of ``seen``;
    ``value`` at or above it is skipped.
    """
    if fraction <= 0 or len(seen) < max(1, startup):
        return False
    return value >= float(np.quantile(seen, 1.0 - fraction))


ATTRIBUTE = PROXY_STDDEV  # the name bench and the tests know it by


def screen(
    trial: optuna.Trial,
    transform,
    teacher: nn.Module,
    images: np.ndarray,
    normalise: Normaliser,
    batch_size: int,
    settings: ProxySettings,
) -> float:
    """Score a trial's policy before it trains: store T. stddev on the trial, prune it if it is among
    the worst the study has seen so far (when the space asks for that).

    Pruning here happens at "step 0", before any epoch is reported, so Optuna's TPE ranks the trial
    below every trial that reported anything, which is what a skipped policy deserves.
    """
    group = min(batch_size, len(images) // max(2, settings.batches))
    started = time.perf_counter()
    value = teacher_stddev(teacher, images[: group * settings.batches], transform, normalise, group)
    trial.set_user_attr(ATTRIBUTE, value)
    trial.set_user_attr(PROXY_SECONDS, round(time.perf_counter() - started, 3))
    seen = [
        t.user_attrs[ATTRIBUTE]
        for t in trial.study.get_trials(deepcopy=False)
        if t.number != trial.number and ATTRIBUTE in t.user_attrs
    ]
    if in_worst_fraction(value, seen, settings.skip_worst_fraction, settings.startup_trials):
        reason = (
            f"skipped before training: T. stddev {value:.5f} is in the worst "
            f"{settings.skip_worst_fraction:.0%} of the {len(seen)} seen so far"
        )
        trial.set_user_attr(PRUNED_REASON, reason)
        raise optuna.TrialPruned(reason)
    return value
