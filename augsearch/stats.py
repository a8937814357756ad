"""The statistics a comparison of retrained students rests on: paired differences, calibration, ranks.

Pure functions on numbers and arrays (a leaf: nothing of augsearch is imported), so each can be checked
against a hand computation.

- Per-seed pairing: every policy is retrained with the same seeds, and the same seed gives the same
  student initialisation and data order, so the difference of two policies is taken seed by seed and the
  seed's own luck cancels. The interval is Student's t on those differences (a paired t-interval).
- Calibration: expected calibration error over equal-width confidence bins (Guo et al., "On Calibration
  of Modern Neural Networks", ICML 2017, with their 15 bins) and the negative log-likelihood of the true
  class.
- Rank fidelity: Spearman's ρ with an interval from Fisher's z, using the standard error 1.06/√(n−3)
  that Fieller, Hartley and Pearson (Biometrika 1957) give for rank correlations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Difference:
    """Mean of the per-seed differences a − b with its two-sided t-interval (None below two pairs)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float  # sample standard deviation of the differences (0 with one pair)
    confidence: float

    @property
    def word(self) -> str:
        """'beats', 'loses to' or 'ties with', at the interval's confidence; 'unknown' without an interval."""
        if self.low is None or self.high is None:
            return "unknown"
        if self.low > 0:
            return "beats"
        if self.high < 0:
            return "loses to"
        return "ties with"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Per-seed differences a[i] − b[i] (same seed i on both sides), their mean and t-interval."""
    if len(a) != len(b):
        raise ValueError("paired_difference needs one value per seed on each side")
    if not a:
        raise ValueError("paired_difference needs at least one pair")
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n, mean = len(differences), float(differences.mean())
    if n < 2:
        return Difference(mean, None, None, n, 0.0, confidence)
    sd = float(differences.std(ddof=1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, n, sd, confidence)


def t_quantile(confidence: float, degrees: int) -> float:
    """The two-sided critical value of Student's t: 4.303 for 95% and 2 degrees of freedom."""
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, degrees))


def seeds_needed(difference: Difference, limit: int = 1000) -> int | None:
    """How many paired seeds would make this mean difference significant, if the spread of the differences
    stays as observed: the smallest n with t(n−1)·sd/√n < |mean|. None when the mean is 0, the spread is
    unknown (fewer than two pairs) or more than ``limit`` seeds would be needed; 0 if it is significant
    already."""
    if difference.n < 2 or difference.mean == 0:
        return None
    if difference.word in ("beats", "loses to"):
        return 0
    if difference.sd == 0:
        return difference.n
    for n in range(max(difference.n, 2), limit + 1):
        if t_quantile(difference.confidence, n - 1) * difference.sd / math.sqrt(n) < abs(difference.mean):
            return n
    return None


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE = Σ_b (|B_b| / N) · |accuracy(B_b) − confidence(B_b)| over equal-width bins of the top-1
    confidence in (0, 1] (Guo et al. 2017); ``probabilities`` is (N, classes), each row summing to 1."""
    probabilities, labels = np.asarray(probabilities, dtype=float), np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or not len(labels):
        raise ValueError("expected_calibration_error needs (N, classes) probabilities and N labels, N > 0")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur for a top-1
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log p(true class); probabilities are floored at 1e-12, so a confident mistake costs ~27.6,
    not ∞."""
    probabilities, labels = np.asarray(probabilities, dtype=float), np.asarray(labels)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean())


def spearman_interval(rho: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The interval of a Spearman ρ over n pairs: tanh(atanh ρ ± z·1.06/√(n−3)); None below 4 pairs."""
    if n < 4:
        return None
    centre = math.atanh(max(min(rho, 0.999999), -0.999999))
    half = float(_scipy_stats.norm.ppf(0.5 + confidence / 2)) * 1.06 / math.sqrt(n - 3)
    return math.tanh(centre - half), math.tanh(centre + half)
