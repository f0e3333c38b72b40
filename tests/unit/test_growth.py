"""The growth and pruning rules on constructed leaf probabilities."""
import numpy as np
import pytest

from treediff.tree import Tree
from treediff.vae.config import GrowthConfig
from treediff.vae.growth import choose_prune, choose_split, effective_leaves, leaf_threshold, plan_growth


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


class BalancedExecutor:
    """Trains nothing; every leaf holds an equal share of the samples, each sample sure of its leaf."""

    def __init__(self, n: int = 600):
        self.n = n
        self.trained = []  # (desc, epochs, kl_decay, samples) of every phase

    @property
    def num_samples(self):
        return self.n

    def train(self, model, *, subtree, epochs, desc, subset=None, phase=0, kl_decay=None):
        self.trained.append((desc, epochs, kl_decay, self.n if subset is None else int(subset.sum())))

    def leaf_probs(self, model):
        k = len(model.tree.leaves)
        probs = np.full((self.n, k), 0.1 / max(k - 1, 1))
        probs[np.arange(self.n), np.arange(self.n) % k] = 0.9 if k > 1 else 1.0
        return probs


@pytest.mark.parametrize("growth", [
    GrowthConfig(intermediate_fulltrain_every=3),  # the MNIST schedule: 8 splits, full retraining after the 3rd and 6th
    GrowthConfig(max_depth=2, num_clusters_tree=10),  # the depth limit stops growth at 4 leaves
    GrowthConfig(max_phases=2, intermediate_fulltrain_every=1),
])
def test_plan_follows_the_growth_run(tmp_path, growth):
    from treediff.vae import OptimConfig, TreeVAEConfig
    from treediff.vae.trainer import GrowthRun

    optim = OptimConfig(batch_size=8)
    plan = plan_growth(growth, optim)
    model_cfg = TreeVAEConfig(latent_channels=2, bottom_up_channels=4, max_depth=growth.max_depth)
    model = GrowthRun(model_cfg, growth, optim, None, tmp_path, {}, executor=BalancedExecutor()).run()
    names = sorted(p.name for p in (tmp_path / "tree").iterdir() if p.name.startswith("phase-"))
    assert [n.split("-", 2)[2] for n in names] == [p.kind + (f"-{p.leaf}" if p.leaf is not None else "") for p in plan]
    assert plan[-1].leaves == len(model.tree.leaves)
    assert [p.epochs for p in plan if p.kind == "subtree"] == [150] * sum(p.kind == "subtree" for p in plan)
