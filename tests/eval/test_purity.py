"""Leaf purity on constructed histograms with known answers."""
import math

import numpy as np
import pytest

from treediff.metrics.purity import class_entropy, class_histogram, purity, purity_report


def test_perfect_uniform_and_permuted():
    assert purity([0, 12, 0]) == 1 and class_entropy([0, 12, 0]) == 0
    assert purity([5, 5, 5, 5]) == 0.25 and class_entropy([5, 5, 5, 5]) == pytest.approx(math.log(4))
    # permuting class names changes neither
    h = np.array([7, 2, 1])
    for perm in ([2, 0, 1], [1, 2, 0]):
        assert purity(h[perm]) == purity(h) == 0.7
        assert class_entropy(h[perm]) == pytest.approx(class_entropy(h))


def test_random_predictions_are_near_chance():
    preds = np.random.default_rng(0).integers(0, 10, 20000)
    h = class_histogram(preds, 10)
    assert h.sum() == 20000 and purity(h) < 0.12
    assert class_entropy(h) == pytest.approx(math.log(10), abs=0.01)


def test_report_weights_leaves_by_size():
    r = purity_report({3: np.array([10, 0]), 4: np.array([5, 5]), 9: np.array([0, 0])})
    assert sorted(r["leaves"]) == [3, 4]  # an empty leaf is left out
    assert r["leaves"][3]["majority"] == 0 and r["leaves"][4]["purity"] == 0.5
    assert r["mean_purity"] == pytest.approx((10 * 1 + 10 * 0.5) / 20)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="predictions"):
        class_histogram([0, 3], 3)
    with pytest.raises(ValueError, match="empty"):
        purity([0, 0])
    with pytest.raises(ValueError, match="no leaf"):
        purity_report({1: np.zeros(3)})


def test_report_names_the_class_that_takes_the_most_generations():
    r = purity_report({1: np.array([6, 2, 0]), 2: np.array([4, 0, 0]), 5: np.array([0, 0, 8])})
    assert r["largest_class"] == 0 and r["largest_class_share"] == pytest.approx(10 / 20)
