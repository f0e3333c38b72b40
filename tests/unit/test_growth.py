"""The growth and pruning rules on constructed leaf probabilities."""
import numpy as np

from treediff.tree import Tree
from treediff.vae.growth import choose_prune, choose_split, effective_leaves, leaf_threshold


def probs_for(counts_by_leaf: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """Hard assignments: counts_by_leaf[l] samples with P(l|x) = 1."""
    leaves = sorted(counts_by_leaf)
    rows = []
    for j, l in enumerate(leaves):
        rows += [np.eye(len(leaves))[j]] * counts_by_leaf[l]
    return np.array(rows), leaves


def test_effective_leaves_and_threshold():
    p, _ = probs_for({3: 500, 4: 495, 5: 5})  # leaf 5 holds 0.5 % of the mass
    assert effective_leaves(p) == 2
    assert leaf_threshold(2) == 0.5 and leaf_threshold(4) == 0.25 and leaf_threshold(1) == 0.5


def test_split_picks_the_fullest_leaf():
    p, leaves = probs_for({2: 300, 3: 500, 4: 200})
    d = choose_split(p, leaves, num_clusters=10, min_samples=64, max_depth=6)
    assert d.leaf == 3 and d.counts == {2: 300, 3: 500, 4: 200} and d.n_effective == 3


def test_split_uses_the_threshold_on_soft_probabilities():
    # 3 effective leaves -> threshold 1/3. Leaf 1 is most probable on average but rarely >= 1/3.
    p = np.array([[0.32, 0.34, 0.34]] * 100 + [[0.9, 0.05, 0.05]] * 30 + [[0.1, 0.1, 0.8]] * 60)
    d = choose_split(p, [1, 3, 4], num_clusters=10, min_samples=10, max_depth=6)
    assert d.threshold == 1 / 3
    assert d.counts == {1: 30, 3: 100, 4: 160}
    assert d.leaf == 4


def test_split_skips_small_leaves_and_non_expandable_ones():
    p, leaves = probs_for({5: 40, 6: 30, 2: 20})
    d = choose_split(p, leaves, num_clusters=10, min_samples=25, max_depth=6, non_expandable={5})
    assert d.leaf == 6
    d = choose_split(p, leaves, num_clusters=10, min_samples=50, max_depth=6)
    assert d.leaf is None and sorted(d.skipped) == [2, 5, 6] and "no leaf" in d.reason


def test_split_stops_at_max_depth_and_at_enough_leaves():
    p, leaves = probs_for({7: 500, 4: 100, 2: 100})  # node 7 is at depth 3
    d = choose_split(p, leaves, num_clusters=10, min_samples=10, max_depth=3)
    assert d.leaf is None and d.blocked == [7]
    p, leaves = probs_for({1: 100, 2: 100, 3: 100})
    d = choose_split(p, leaves, num_clusters=3, min_samples=10, max_depth=6)
    assert d.leaf is None and "effective" in d.reason


def test_prune_takes_the_smallest_leaf_below_the_fraction():
    t = Tree.initial(2)  # leaves 3, 4, 5, 6
    a = np.array([3] * 500 + [4] * 3 + [5] * 300 + [6] * 8)
    d = choose_prune(a, t, fraction=0.01)
    assert d.leaf == 4 and d.sizes[4] == 3
    a = np.array([3] * 500 + [4] * 100 + [5] * 300 + [6] * 80)
    assert choose_prune(a, t, fraction=0.01).leaf is None
