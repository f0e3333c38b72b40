"""The ceiling and the confusion matrix, on constructed examples; the baselines on tiny data."""
import numpy as np
import pytest
import torch

from treediff.eval.diagnostics import confusion, per_leaf_mean, purity_caveats, purity_ceiling
from treediff.metrics.baselines import kmeans_baseline, ward_baseline
from treediff.metrics.clustering import leaf_purity
from treediff.vae import TreeVAE, TreeVAEConfig
from treediff.vae.trainer import leaf_assignments


def test_the_ceiling_is_the_trees_purity_on_real_images():
    torch.manual_seed(0)
    model = TreeVAE(TreeVAEConfig(latent_channels=2, bottom_up_channels=4, max_depth=2)).eval()
    model.split(model.tree.leaves[0])
    x = torch.rand(40, 1, 8, 8) * 2 - 1
    leaf_of = leaf_assignments(model, x)
    labels = np.arange(40) % 3
    c = purity_ceiling(model, x, labels, 3, predicted=np.zeros(40, dtype=int))
    assert c["n"] == 40 and c["mean_purity"] == pytest.approx(leaf_purity(labels, leaf_of))
    sizes = {leaf: int((leaf_of == leaf).sum()) for leaf in set(leaf_of.tolist())}
    assert {leaf: v["n"] for leaf, v in c["leaves"].items()} == sizes
    assert c["per_leaf_mean"] == pytest.approx(np.mean([v["purity"] for v in c["leaves"].values()]))
    assert c["classifier_mean_purity"] == 1.0  # a classifier that always says 0 sees pure leaves
    assert per_leaf_mean({"leaves": {1: {"purity": 0.5}, 2: {"purity": 1.0}}}) == 0.75


def test_confusion_counts_true_rows_against_predicted_columns():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 1, 2])
    c = confusion(labels, predicted, 4)
    assert c["matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert c["accuracy"] == pytest.approx(4 / 6) and c["recall"] == [0.5, 1.0, 0.5, None]
    assert c["predicted_share"][1] == pytest.approx(4 / 6)  # class 1 is the sink


def test_baselines_find_well_separated_blobs():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 255, size=(3, 16))
    make = lambda n: (np.concatenate([c + rng.normal(0, 3, size=(n, 16)) for c in centres]), np.repeat(np.arange(3), n))
    (xtr, _), (xte, yte) = make(30), make(10)
    km = kmeans_baseline(xtr.reshape(-1, 4, 4, 1), xte.reshape(-1, 4, 4, 1), yte, k=3)
    ward = ward_baseline(xtr.reshape(-1, 4, 4, 1), xte.reshape(-1, 4, 4, 1), yte, k=3)
    assert km["nmi"] == pytest.approx(1.0) and ward["nmi"] == pytest.approx(1.0) and ward["acc"] == 1.0


def test_caveats_name_a_weak_classifier_and_a_sink_class():
    from treediff.metrics.purity import purity_report
    sink = purity_report({1: np.array([9, 1, 0]), 2: np.array([10, 0, 0]), 3: np.array([8, 0, 2])})  # 27 of 30 in class 0
    spread = purity_report({1: np.array([9, 1, 0]), 2: np.array([0, 10, 0]), 3: np.array([1, 0, 9])})
    two_leaves = purity_report({1: np.array([9, 1, 0]), 2: np.array([10, 0, 0])})  # too few leaves to tell
    assert purity_caveats(0.99, {"path": spread, "recon": two_leaves}) == []
    lines = purity_caveats(0.584, {"path": sink, "recon": spread})
    assert len(lines) == 2
    assert "0.584" in lines[0] and "eval.classifier_epochs" in lines[0]
    assert lines[1].startswith("path: 90% of the generations routed to 3 leaves are classified as class 0")
