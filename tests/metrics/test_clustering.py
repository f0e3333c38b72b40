"""Clustering metrics on constructed assignments with known answers."""
import itertools

import numpy as np
import pytest

from treediff.metrics.clustering import (ari, cluster_acc, clustering_report, dendrogram_purity, histogram_pairs,
                                         leaf_purity, nmi, nmi_standard_error)

FLAT = (nmi, ari, cluster_acc, leaf_purity)


# ---------------------------------------------------------------------------------- flat metrics
def test_perfect_and_permuted():
    y = np.repeat(np.arange(4), 25)
    for c in (y, (y + 1) % 4 + 10, np.array([7, 3, 9, 0])[y]):
        assert nmi(y, c) == pytest.approx(1) and ari(y, c) == pytest.approx(1)
        assert cluster_acc(y, c) == 1 and leaf_purity(y, c) == 1


def test_relabelling_clusters_changes_nothing():
    rng = np.random.default_rng(1)
    y, c = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    c_perm = rng.permutation(5)[c] + 100
    for f in FLAT:
        assert f(y, c_perm) == pytest.approx(f(y, c))


def test_constructed_confusion():
    # cluster 0: 8 of class 0, 2 of class 1; cluster 1: 3 of class 0, 7 of class 1
    # best matching 0->0, 1->1: ACC = (8 + 7) / 20; purity: majorities 8 and 7 -> (8 + 7) / 20
    y = np.array([0] * 8 + [1] * 2 + [0] * 3 + [1] * 7)
    c = np.array([0] * 10 + [1] * 10)
    assert cluster_acc(y, c) == pytest.approx(15 / 20)
    assert leaf_purity(y, c) == pytest.approx((8 + 7) / 20)
    # swapping cluster names: matching must still find 15, not the diagonal 5
    assert cluster_acc(y, 1 - c) == pytest.approx(15 / 20)
    # three clusters for two classes: the best match uses 2 clusters, the third counts as errors;
    # cluster 2 (the 2 class-1 samples) is pure, so it adds to purity but not to ACC
    c3 = np.array([0] * 8 + [2] * 2 + [1] * 10)
    assert cluster_acc(y, c3) == pytest.approx((8 + 7) / 20)
    assert leaf_purity(y, c3) == pytest.approx((8 + 2 + 7) / 20)


def test_more_clusters_than_classes():
    # every class split evenly into two pure clusters: purity 1, ACC 1/2 (3 of 6 clusters matched)
    y = np.repeat(np.arange(3), 20)
    c = np.arange(60) // 10
    assert leaf_purity(y, c) == 1.0
    assert cluster_acc(y, c) == pytest.approx(0.5)
    assert 0 < nmi(y, c) < 1 and 0 < ari(y, c) < 1
    # one cluster per sample: purity 1, ACC = 3 matched samples / 60
    singletons = np.arange(60)
    assert leaf_purity(y, singletons) == 1.0 and cluster_acc(y, singletons) == pytest.approx(3 / 60)


def test_fewer_clusters_than_classes():
    # everything in one cluster: ACC = purity = largest class fraction, NMI = ARI = 0
    y = np.array([0] * 5 + [1] * 3 + [2] * 2)
    c = np.zeros(10, dtype=int)
    assert cluster_acc(y, c) == pytest.approx(0.5) and leaf_purity(y, c) == pytest.approx(0.5)
    assert nmi(y, c) == pytest.approx(0) and ari(y, c) == pytest.approx(0)


def test_random_assignments_score_near_chance():
    rng = np.random.default_rng(0)
    k = 10
    y, c = rng.integers(0, k, 20000), rng.integers(0, k, 20000)
    assert nmi(y, c) < 0.01 and abs(ari(y, c)) < 0.01
    assert 1 / k - 0.01 < cluster_acc(y, c) < 1 / k + 0.02
    assert 1 / k - 0.01 < leaf_purity(y, c) < 1 / k + 0.03


def test_returns_python_floats():
    y = np.array([0, 0, 1, 1])
    for f in FLAT:
        assert type(f(y, y)) is float
    rep = clustering_report(y, np.array([1, 1, 2, 2]), {0: [1, 2], 1: [], 2: []})
    assert all(type(v) is float for v in rep.values())


def test_errors_name_the_argument():
    for f in FLAT + (clustering_report,):
        with pytest.raises(ValueError, match="clusters has 2 entries but labels has 3"):
            f([0, 1, 2], [0, 1])
        with pytest.raises(ValueError, match="empty"):
            f([], [])
    with pytest.raises(ValueError, match="clusters must be 1-D"):
        nmi([0, 1], [[0, 1]])
    with pytest.raises(ValueError, match="labels must be 1-D"):
        ari([[0, 1]], [0, 1])
    tree = {0: [1, 2], 1: [], 2: []}
    with pytest.raises(ValueError, match="leaf_of_sample has 1 entries but labels has 2"):
        dendrogram_purity([0, 1], [1], tree)
    with pytest.raises(ValueError, match="leaf_of_sample"):
        dendrogram_purity([], [], tree)


# ---------------------------------------------------------------------------------- NMI's sampling error
def noisy_clustering(rng, n, k=10, flip=0.3):
    """Labels and clusters that agree but for a `flip` fraction reassigned at random."""
    y = rng.integers(0, k, n)
    c = np.where(rng.random(n) < flip, rng.integers(0, k, n), y)
    return y, c


def test_nmi_standard_error_matches_the_spread_over_fresh_samples():
    rng = np.random.default_rng(0)
    for n in (360, 2000):
        spread = np.std([nmi(*noisy_clustering(rng, n)) for _ in range(150)])
        errors = [nmi_standard_error(*noisy_clustering(rng, n), n_resamples=199, seed=i) for i in range(3)]
        assert all(0.6 * spread < e < 1.25 * spread for e in errors), (n, spread, errors)
    assert nmi_standard_error(*noisy_clustering(rng, 3000), n_resamples=199) < spread * 0.9  # narrows with n


def test_nmi_standard_error_is_reproducible_and_zero_for_constant_scores():
    y, c = noisy_clustering(np.random.default_rng(1), 150)
    assert nmi_standard_error(y, c, n_resamples=99, seed=3) == nmi_standard_error(y, c, n_resamples=99, seed=3)
    assert nmi_standard_error(y, c, n_resamples=99, seed=3) != nmi_standard_error(y, c, n_resamples=99, seed=4)
    assert nmi_standard_error(y, y, n_resamples=99) == 0.0
    with pytest.raises(ValueError, match="n_resamples must be >= 2"):
        nmi_standard_error(y, c, n_resamples=1)
    with pytest.raises(ValueError, match="clusters has 2 entries but labels has 3"):
        nmi_standard_error([0, 1, 2], [0, 1])


def test_histogram_pairs_score_as_the_samples():
    y, c = noisy_clustering(np.random.default_rng(2), 500, k=4)
    hist = {leaf: np.bincount(y[c == leaf], minlength=4).tolist() for leaf in np.unique(c)}
    y2, c2 = histogram_pairs(hist)
    assert len(y2) == len(y)
    for f in FLAT:
        assert f(y2, c2) == pytest.approx(f(y, c))
    assert histogram_pairs({"7": [0, 2, 1]})[1].tolist() == [7, 7, 7]
    with pytest.raises(ValueError, match="empty"):
        histogram_pairs({})


# ---------------------------------------------------------------------------------- dendrogram purity
def brute_dp(labels, leaf_of, children):
    """O(N^2) reference straight from the definition (Kobren et al., 2017)."""
    parent = {k: n for n, ks in children.items() for k in ks}

    def ancestors(n):  # n, parent(n), ..., root
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
    return float(np.mean(vals)) if vals else 1.0


def random_tree(rng, max_depth=4):
    """Random heap-ordered tree with leaves, two-child nodes and pass-through (one-child) nodes."""
    children = {}

    def grow(node, d):
        r = rng.random()
        if d == max_depth or (d > 0 and r < 0.3):
            children[node] = []
        elif r < 0.5:  # pass-through after pruning: keep only one side
            kid = 2 * node + 1 + int(rng.integers(2))
            children[node] = [kid]
            grow(kid, d + 1)
        else:
            children[node] = [2 * node + 1, 2 * node + 2]
            grow(2 * node + 1, d + 1)
            grow(2 * node + 2, d + 1)

    grow(0, 0)
    return children


def test_dendrogram_purity_hand_computed():
    # root 0 -> leaves 1, 2. leaf 1: classes [0, 0, 1]; leaf 2: [1, 1]
    # class-0 pairs: 1, inside leaf 1 (purity 2/3). class-1 pairs: 1 inside leaf 2 (purity 1) and
    # 2 across at the root (purity 3/5). DP = (2/3 + 1 + 3/5 + 3/5) / 4
    children = {0: [1, 2], 1: [], 2: []}
    y, leaf = np.array([0, 0, 1, 1, 1]), np.array([1, 1, 1, 2, 2])
    assert dendrogram_purity(y, leaf, children) == pytest.approx((2 / 3 + 1 + 0.6 + 0.6) / 4)


def test_dendrogram_purity_hand_computed_three_levels():
    # 0 -> 1, 2; 1 -> 3, 4; 2 is a leaf.  leaf 3: [0, 0], leaf 4: [0, 1], leaf 2: [1, 1]
    # class 0 (3 samples, 3 pairs): 1 pair in leaf 3 -> purity 1; 2 pairs across 3|4, LCA node 1
    #   holding [0, 0, 0, 1] -> purity 3/4 each.
    # class 1 (3 samples, 3 pairs): 1 pair in leaf 2 -> 1; 2 pairs (leaf 4 x leaf 2), LCA root
    #   holding 3 of 6 class 1 -> 1/2 each.
    # DP = (1 + 3/4 + 3/4 + 1 + 1/2 + 1/2) / 6 = 4.5 / 6 = 0.75
    children = {0: [1, 2], 1: [3, 4], 2: [], 3: [], 4: []}
    y = np.array([0, 0, 0, 1, 1, 1])
    leaf = np.array([3, 3, 4, 4, 2, 2])
    assert dendrogram_purity(y, leaf, children) == pytest.approx(0.75)
    assert brute_dp(y, leaf, children) == pytest.approx(0.75)
    # a pass-through node above leaf 2 (2 -> 6) changes nothing
    through = {0: [1, 2], 1: [3, 4], 2: [6], 3: [], 4: [], 6: []}
    assert dendrogram_purity(y, np.where(leaf == 2, 6, leaf), through) == pytest.approx(0.75)


def test_dendrogram_purity_is_one_for_pure_trees():
    assert dendrogram_purity(np.array([0, 0, 1, 1]), np.array([1, 1, 2, 2]), {0: [1, 2], 1: [], 2: []}) == 1.0
    # deeper: each class in its own subtree (several leaves per class), with a pass-through node
    children = {0: [1, 2], 1: [3, 4], 2: [5], 3: [], 4: [], 5: [11, 12], 11: [], 12: []}
    y = np.array([0] * 7 + [1] * 9)
    leaf = np.array([3] * 3 + [4] * 4 + [11] * 5 + [12] * 4)
    assert dendrogram_purity(y, leaf, children) == pytest.approx(1.0)
    assert clustering_report(y, leaf, children)["dendrogram_purity"] == pytest.approx(1.0)


def test_dendrogram_purity_single_leaf_is_class_balance():
    # one leaf holding everything: every pair's LCA is it, purity of class k = n_k / N;
    # DP = sum_k C(n_k, 2) * n_k / N / sum_k C(n_k, 2) = (6*4/6 + 1*2/6) / 7
    y = np.array([0, 0, 0, 0, 1, 1])
    assert dendrogram_purity(y, np.zeros(6, dtype=int), {0: []}) == pytest.approx((6 * 4 / 6 + 2 / 6) / 7)


def test_dendrogram_purity_matches_brute_force_fixed_tree():
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
    assert set(clustering_report(y, leaf)) == {"nmi", "ari", "acc", "leaf_purity"}


def test_dendrogram_purity_matches_brute_force_random_trees():
    rng = np.random.default_rng(7)
    seen_pass_through = 0
    for _ in range(40):
        children = random_tree(rng)
        seen_pass_through += any(len(k) == 1 for k in children.values())
        leaves = [n for n, k in children.items() if not k]
        n = int(rng.integers(2, 30))
        y = rng.integers(0, int(rng.integers(1, 5)), n)
        # sometimes crowd the samples into few leaves, leaving others empty
        pool = rng.choice(leaves, size=min(len(leaves), int(rng.integers(1, 5))), replace=False) \
            if rng.random() < 0.3 else leaves
        leaf = rng.choice(pool, n)
        assert dendrogram_purity(y, leaf, children) == pytest.approx(brute_dp(y, leaf, children))
    assert seen_pass_through >= 5


def test_dendrogram_purity_rejects_bad_trees():
    with pytest.raises(ValueError, match="not leaves"):
        dendrogram_purity([0, 1], [0, 1], {0: [1, 2], 1: [], 2: []})
    with pytest.raises(ValueError, match="not leaves"):
        dendrogram_purity([0, 1], [1, 9], {0: [1, 2], 1: [], 2: []})
    with pytest.raises(ValueError, match="no entry"):
        dendrogram_purity([0, 1], [1, 1], {0: [1, 2], 1: []})
    with pytest.raises(ValueError, match="at most 2"):
        dendrogram_purity([0, 1], [1, 1], {0: [1, 2, 3], 1: [], 2: [], 3: []})
