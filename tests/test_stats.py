"""The comparison statistics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from augsearch.stats import (
    expected_calibration_error,
    negative_log_likelihood,
    paired_difference,
    seeds_needed,
    spearman_interval,
    t_quantile,
)


def test_t_quantile_matches_the_table() -> None:
    assert t_quantile(0.95, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.95, 10) == pytest.approx(2.2281, abs=1e-4)


def test_paired_difference_by_hand() -> None:
    # a − b per seed: 0.02, 0.01, 0.03 -> mean 0.02, sd 0.01, half-width 4.3027 · 0.01 / √3 = 0.024842
    difference = paired_difference([0.92, 0.91, 0.93], [0.90, 0.90, 0.90])
    assert difference.mean == pytest.approx(0.02)
    assert difference.sd == pytest.approx(0.01)
    assert difference.low == pytest.approx(0.02 - 0.024842, abs=1e-6)
    assert difference.high == pytest.approx(0.02 + 0.024842, abs=1e-6)
    assert difference.word == "ties with"


def test_pairing_removes_the_seed_luck() -> None:
    # seed luck moves both sides together: unpaired the sides overlap, paired the gap is exact
    luck = [0.00, 0.05, -0.04]
    a = [0.90 + x + 0.01 for x in luck]
    b = [0.90 + x + d for x, d in zip(luck, (0.000, 0.001, -0.001), strict=True)]
    difference = paired_difference(a, b)
    assert difference.word == "beats"
    assert difference.low > 0.005
    assert paired_difference(b, a).word == "loses to"


def test_one_pair_has_no_interval() -> None:
    difference = paired_difference([0.9], [0.8])
    assert difference.low is None and difference.word == "unknown"
    assert seeds_needed(difference) is None
    with pytest.raises(ValueError):
        paired_difference([0.9, 0.8], [0.8])


def test_seeds_needed_by_hand() -> None:
    # mean 0.01, sd 0.01: n=5 gives 2.776·0.01/√5 = 0.0124 (not yet), n=6 gives 2.571·0.01/√6 = 0.0105,
    # n=7 gives 2.447·0.01/√7 = 0.00925 < 0.01
    difference = paired_difference([0.01, 0.00, 0.02], [0.0, 0.0, 0.0])
    assert difference.word == "ties with"
    assert seeds_needed(difference) == 7
    assert seeds_needed(paired_difference([0.05, 0.06, 0.07], [0, 0, 0])) == 0


def test_ece_on_a_hand_made_example() -> None:
    # four samples, 2 classes, confidences 0.9, 0.9 (bin 14), 0.6, 0.6 (bin 9)
    # bin 14: both right -> |1 − 0.9| = 0.1, weight 1/2; bin 9: one right -> |0.5 − 0.6| = 0.1, weight 1/2
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 0])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.1)
    # perfectly calibrated: confidence 1, always right
    assert expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)
    # one wrong sample at confidence 0.6: the gap is the whole confidence
    assert expected_calibration_error(np.array([[0.6, 0.4]]), np.array([1])) == pytest.approx(0.6)
    # two bins whose gaps have opposite signs do not cancel: |1 − 0.7|·1/2 + |0 − 0.55|·1/2
    mixed = np.array([[0.7, 0.3], [0.55, 0.45]])
    assert expected_calibration_error(mixed, np.array([0, 1])) == pytest.approx((0.3 + 0.55) / 2)


def test_nll_by_hand() -> None:
    probabilities = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert negative_log_likelihood(probabilities, np.array([0, 1])) == pytest.approx(
        (math.log(2) + math.log(4 / 3)) / 2
    )
    assert negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-12))


def test_spearman_interval() -> None:
    low, high = spearman_interval(0.5, 12)
    half = 1.959964 * 1.06 / 3
    assert low == pytest.approx(math.tanh(math.atanh(0.5) - half), abs=1e-6)
    assert high == pytest.approx(math.tanh(math.atanh(0.5) + half), abs=1e-6)
    assert spearman_interval(0.5, 3) is None
    assert spearman_interval(1.0, 10)[1] <= 1.0
