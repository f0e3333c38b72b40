"""Clustering metrics on constructed assignments with known answers."""
import itertools

import numpy as np
import pytest

from treediff.metrics.clustering import (ari, cluster_acc, clustering_report, dendrogram_purity, leaf_purity,
                                         nmi)


def test_perfect_and_permuted():
    y = np.repeat(np.arange(4), 25)
    for c in (y, (y + 1) % 4 + 10):
        assert nmi(y, c) == pytest.approx(1) and ari(y, c) == pytest.approx(1)
        assert cluster_acc(y, c) == 1 and leaf_purity(y, c) == 1


def test_constructed_confusion():
    # cluster 0: 8 of class 0, 2 of class 1; cluster 1: 3 of class 0, 7 of class 1
    y = np.array([0] * 8 + [1] * 2 + [0] * 3 + [1] * 7)
    c = np.array([0] * 10 + [1] * 10)
    assert cluster_acc(y, c) == pytest.approx(15 / 20)
    assert leaf_purity(y, c) == pytest.approx((8 + 7) / 20)
    # three clusters for two classes: the best match uses 2 clusters, the third counts as errors
    c3 = np.array([0] * 8 + [2] * 2 + [1] * 10)
    assert cluster_acc(y, c3) == pytest.approx((8 + 7) / 20)
    assert leaf_purity(y, c3) == pytest.approx((8 + 2 + 7) / 20)


def test_random_assignments_score_near_chance():
    rng = np.random.default_rng(0)
    y, c = rng.integers(0, 10, 20000), rng.integers(0, 10, 20000)
    assert nmi(y, c) < 0.01 and abs(ari(y, c)) < 0.01 and cluster_acc(y, c) < 0.12


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="clusters has 2 entries but labels has 3"):
        nmi([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        cluster_acc([], [])


def brute_dp(labels, leaf_of, children):
    parent = {k: n for n, ks in children.items() for k in ks}

    def ancestors(n):
        out = [n]
        while n in parent:
            n = parent[n]
            out.append(n)
        return out

    def under(node):
        return [i for i in range(len(labels)) if node in ancestors(leaf_of[i])]

    vals = []
    for a, b in itertools.combinations(range(len(labels)), 2):
        if labels[a] != labels[b]:
            continue
        anc_b = set(ancestors(leaf_of[b]))
        lca = next(n for n in ancestors(leaf_of[a]) if n in anc_b)
        members = under(lca)
        vals.append(np.mean([labels[i] == labels[a] for i in members]))
    return float(np.mean(vals))


def test_dendrogram_purity_hand_computed():
    # root 0 -> leaves 1, 2. leaf 1: classes [0, 0, 1]; leaf 2: [1, 1]
    # class-0 pairs: (0,0) in leaf 1, purity 2/3. class-1 pairs: 1 inside leaf 2 (purity 1) and
    # 2 across at the root (purity 3/5). DP = (2/3 + 1 + 3/5 + 3/5) / 4
    children = {0: [1, 2], 1: [], 2: []}
    y, leaf = np.array([0, 0, 1, 1, 1]), np.array([1, 1, 1, 2, 2])
    assert dendrogram_purity(y, leaf, children) == pytest.approx((2 / 3 + 1 + 0.6 + 0.6) / 4)
    assert dendrogram_purity(np.array([0, 0, 1, 1]), np.array([1, 1, 2, 2]), children) == 1.0


def test_dendrogram_purity_matches_brute_force_with_pass_through():
    # 0 -> 1, 2; 1 -> 3, 4; 2 -> 6 only (pass-through); 6 -> 13, 14
    children = {0: [1, 2], 1: [3, 4], 2: [6], 3: [], 4: [], 6: [13, 14], 13: [], 14: []}
    rng = np.random.default_rng(3)
    for _ in range(5):
        n = 40
        y = rng.integers(0, 3, n)
        leaf = rng.choice([3, 4, 13, 14], n)
        assert dendrogram_purity(y, leaf, children) == pytest.approx(brute_dp(y, leaf, children))
    rep = clustering_report(y, leaf, children)
    assert set(rep) == {"nmi", "ari", "acc", "leaf_purity", "dendrogram_purity"}


def test_dendrogram_purity_rejects_non_leaves():
    with pytest.raises(ValueError, match="not leaves"):
        dendrogram_purity([0, 1], [0, 1], {0: [1, 2], 1: [], 2: []})
