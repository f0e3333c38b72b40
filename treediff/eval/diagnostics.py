"""What bounds the generation metrics: the tree's own purity on real images (the ceiling a
generator conditioned on its leaves can reach) and the purity classifier's confusion on real
images (how far its histograms can be trusted). FID's floor is computed by the farm (real
held-out images as a "reference" chunk) and merely paired with its generation FID here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from ..metrics.purity import purity_report
from ..vae.model import TreeVAE
from ..vae.trainer import leaf_assignments


def _by_leaf(leaf_of: np.ndarray, classes: np.ndarray, n_classes: int) -> dict[int, np.ndarray]:
    return {int(leaf): np.bincount(classes[leaf_of == leaf], minlength=n_classes) for leaf in np.unique(leaf_of)}


def per_leaf_mean(report: dict[str, Any]) -> float:
    """The unweighted mean of the leaves' purities (the per-leaf figure draws equally many per leaf)."""
    return float(np.mean([v["purity"] for v in report["leaves"].values()]))


@torch.no_grad()
def purity_ceiling(tree_model: TreeVAE, x_test: torch.Tensor, labels: np.ndarray, n_classes: int,
                   predicted: np.ndarray | None = None) -> dict[str, Any]:
    """Purity of the real test images grouped by their (most probable) leaf: by their true labels
    (`mean_purity`, size-weighted as routed generations are; `per_leaf_mean`, unweighted as
    per-leaf generations are) and, given the classifier's `predicted` classes, as the classifier sees them."""
    leaf_of = leaf_assignments(tree_model, x_test)
    true = purity_report(_by_leaf(leaf_of, np.asarray(labels), n_classes))
    out = {"n": int(len(leaf_of)), "mean_purity": true["mean_purity"], "per_leaf_mean": per_leaf_mean(true),
           "leaves": {leaf: {"n": v["n"], "purity": v["purity"], "majority": v["majority"]}
                      for leaf, v in true["leaves"].items()}}
    if predicted is not None:
        seen = purity_report(_by_leaf(leaf_of, np.asarray(predicted), n_classes))
        out |= {"classifier_mean_purity": seen["mean_purity"], "classifier_per_leaf_mean": per_leaf_mean(seen)}
    return out


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, Any]:
    """The classifier's confusion matrix on the real test split (rows: true class, columns: predicted)."""
    m = confusion_matrix(labels, predicted, labels=list(range(n_classes)))
    support = m.sum(1)
    return {"matrix": m.tolist(), "accuracy": float(np.trace(m) / max(m.sum(), 1)),
            "recall": [float(m[k, k] / support[k]) if support[k] else None for k in range(n_classes)],
            "predicted_share": (m.sum(0) / max(m.sum(), 1)).tolist()}


def confusion_figure(report: dict[str, Any], classes: list[str], title: str = ""):
    """The confusion matrix as a matplotlib figure (scikit-learn's display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    m = np.asarray(report["matrix"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(m), 0.8 + 0.45 * len(m)))
    ConfusionMatrixDisplay(m, display_labels=classes or list(range(len(m)))).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title or f"purity classifier on the real test split (accuracy {report['accuracy']:.3f})", fontsize=9)
    fig.tight_layout()
    return fig


def purity_caveats(classifier_accuracy: float | None, routed: dict[str, dict[str, Any]],
                   min_accuracy: float = 0.9, max_class_share: float = 0.5) -> list[str]:
    """Why the purities of a report may not mean what they say, in words for its reader.

    classifier_accuracy: the purity classifier's accuracy on the real test split; routed: per
    checkpoint, the purity report of its routed generations (treediff.metrics.purity). Every
    purity is read through the classifier: below `min_accuracy` it is a rough reading. And one
    class taking more than `max_class_share` of the generations routed to three or more leaves
    is either a class the classifier sends unclear images to (a sink) or a generator that ignores
    its leaf; either way a high purity then says nothing about the leaves.
    """
    out = []
    if classifier_accuracy is not None and classifier_accuracy < min_accuracy:
        out.append(f"the purity classifier's test accuracy is {classifier_accuracy:.3f} (< {min_accuracy}): every "
                   f"purity is read through it (eval.classifier_epochs trains it longer)")
    for name, report in routed.items():
        share, leaves = report["largest_class_share"], len(report["leaves"])
        if leaves >= 3 and share > max_class_share:
            out.append(f"{name}: {share:.0%} of the generations routed to {leaves} leaves are classified as class "
                       f"{report['largest_class']}: a sink class of the classifier or a generator that ignores its "
                       f"leaf, so their purity says nothing about the leaves")
    return out
