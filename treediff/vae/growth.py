"""Growth and pruning rules of the TreeVAE (reference notes, section 2), as pure functions.

They take leaf probabilities P(l | x) over a data set and return a decision that says what
was decided and why, so every decision can be logged and tested on constructed examples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..tree import Tree, depth
from .config import GrowthConfig, OptimConfig


def effective_leaves(leaf_probs: np.ndarray, mass: float = 0.01) -> int:
    """Number of leaves whose summed probability mass is at least `mass` of the total."""
    totals = np.asarray(leaf_probs, dtype=np.float64).sum(0)
    return int((totals >= mass * totals.sum()).sum())


def leaf_threshold(n_effective: int) -> float:
    """A sample counts for a leaf when P(l | x) >= min(1 / n_eff, 0.5)."""
    return min(1.0 / max(n_effective, 1), 0.5)


@dataclass
class SplitDecision:
    leaf: int | None  # the leaf to split; None: stop growing
    reason: str
    n_effective: int
    threshold: float
    counts: dict[int, int] = field(default_factory=dict)  # samples per leaf at the threshold
    skipped: list[int] = field(default_factory=list)  # leaves skipped for too few samples
    blocked: list[int] = field(default_factory=list)  # leaves marked non-expandable by this decision

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"] = {str(k): v for k, v in self.counts.items()}
        return d


def choose_split(leaf_probs: np.ndarray, leaves: list[int], *, num_clusters: int, min_samples: int,
                 max_depth: int, non_expandable: set[int] = frozenset(), mass: float = 0.01) -> SplitDecision:
    """The reference rule.

    1. n_eff = effective leaves; stop if n_eff >= num_clusters.
    2. n_l = #samples with P(l | x) >= min(1 / n_eff, 0.5) for every expandable leaf.
    3. Walk the leaves by n_l, descending: skip a leaf with n_l < min_samples; the first one
       not skipped is split, unless its children would exceed max_depth: then it is marked
       non-expandable and growth stops.
    """
    probs = np.asarray(leaf_probs, dtype=np.float64)
    n_eff = effective_leaves(probs, mass)
    thr = leaf_threshold(n_eff)
    counts = {leaf: int((probs[:, j] >= thr).sum()) for j, leaf in enumerate(leaves)}
    if n_eff >= num_clusters:
        return SplitDecision(None, f"{n_eff} effective leaves >= num_clusters_tree={num_clusters}", n_eff, thr, counts)
    ranking = sorted((l for l in leaves if l not in non_expandable), key=lambda l: (-counts[l], l))
    skipped: list[int] = []
    for leaf in ranking:
        if counts[leaf] < min_samples:
            skipped.append(leaf)
            continue
        if depth(leaf) + 1 > max_depth:
            return SplitDecision(None, f"leaf {leaf} is at the maximum depth {max_depth}", n_eff, thr, counts,
                                 skipped, [leaf])
        return SplitDecision(leaf, f"most samples ({counts[leaf]}) among expandable leaves", n_eff, thr, counts,
                             skipped)
    return SplitDecision(None, f"no leaf has >= {min_samples} samples", n_eff, thr, counts, skipped)


@dataclass
class PruneDecision:
    leaf: int | None
    sizes: dict[int, int]  # argmax assignments per leaf
    reason: str


def choose_prune(assignments: np.ndarray, tree: Tree, fraction: float = 0.01) -> PruneDecision:
    """The smallest leaf (by argmax assignments) if it holds < fraction of all samples."""
    assignments = np.asarray(assignments)
    sizes = {leaf: int((assignments == leaf).sum()) for leaf in tree.leaves}
    candidates = [l for l in tree.leaves if l != 0]
    if len(tree.leaves) <= 1 or not candidates:
        return PruneDecision(None, sizes, "a single leaf is never pruned")
    leaf = min(candidates, key=lambda l: (sizes[l], l))
    limit = fraction * len(assignments)
    if sizes[leaf] < limit:
        return PruneDecision(leaf, sizes, f"{sizes[leaf]} samples < {fraction:.1%} of {len(assignments)}")
    return PruneDecision(None, sizes, f"smallest leaf {leaf} has {sizes[leaf]} >= {limit:.1f} samples")


def fulltrain_due(every: int, splits: int, last_kind: str) -> bool:
    """Periodic full retraining: once after every `every`-th split (0: never), before the next decision."""
    return bool(every) and splits > 0 and last_kind != "fulltrain" and splits % every == 0


@dataclass
class PlannedPhase:
    kind: str  # initial, subtree, fulltrain, prune, finetune
    epochs: int
    leaf: int | None = None  # the split leaf (subtree phases)
    leaves: int = 0  # leaves of the tree after the phase


def plan_growth(growth: GrowthConfig, optim: OptimConfig) -> list[PlannedPhase]:
    """The phases a growth run goes through when every leaf stays effective (balanced growth):
    the same rules as `GrowthRun` (choose_split on equal leaf probabilities, fulltrain_due),
    without data. Real runs split by the data: leaves that stay below the effective mass need
    more splits (at most growth.max_phases), and pruning may drop leaves before the fine-tuning.
    """
    tree = Tree.initial(growth.initial_depth)
    phases = [PlannedPhase("initial", optim.epochs_initial, leaves=len(tree.leaves))]
    splits, blocked = 0, set()
    while splits < growth.max_phases:
        if fulltrain_due(growth.intermediate_fulltrain_every, splits, phases[-1].kind):
            phases.append(PlannedPhase("fulltrain", optim.epochs_intermediate, leaves=len(tree.leaves)))
        leaves = tree.leaves
        probs = np.full((1, len(leaves)), 1.0 / len(leaves))
        decision = choose_split(probs, leaves, num_clusters=growth.num_clusters_tree, min_samples=0,
                                max_depth=growth.max_depth, non_expandable=blocked, mass=growth.effective_leaf_mass)
        blocked |= set(decision.blocked)
        if decision.leaf is None:
            break
        tree.split(decision.leaf)
        splits += 1
        phases.append(PlannedPhase("subtree", optim.epochs_subtree, decision.leaf, len(tree.leaves)))
    phases.append(PlannedPhase("prune", 0, leaves=len(tree.leaves)))
    phases.append(PlannedPhase("finetune", optim.epochs_finetune, leaves=len(tree.leaves)))
    return phases
