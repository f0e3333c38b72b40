"""The purity figure of the TreeDiffusion README: per leaf, a row of its generations beside the
histogram of their predicted classes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def purity_figure(preview: dict[int, torch.Tensor], report: dict[str, Any], classes: list[str], title: str = ""):
    """preview: leaf -> uint8 (k, 3, H, W) samples; report: `purity_report` output."""
    leaves = [l for l in sorted(report["leaves"]) if l in preview]
    if not leaves:
        raise ValueError("purity figure: no leaf has both samples and a histogram")
    fig, axes = plt.subplots(len(leaves), 2, figsize=(10, 1.3 * len(leaves) + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, leaf in enumerate(leaves):
        imgs = preview[leaf]
        strip = torch.cat(list(imgs), dim=2).permute(1, 2, 0).numpy()  # (H, k*W, 3)
        axes[row, 0].imshow(strip, interpolation="nearest")
        axes[row, 0].set_axis_off()
        axes[row, 0].set_title(f"leaf {leaf}", fontsize=8, loc="left")
        info = report["leaves"][leaf]
        counts = np.asarray(info["histogram"])
        axes[row, 1].bar(np.arange(len(counts)), counts / max(1, counts.sum()), color="tab:blue")
        axes[row, 1].set_ylim(0, 1)
        axes[row, 1].set_xticks(np.arange(len(counts)))
        axes[row, 1].set_xticklabels(classes[:len(counts)] if classes else np.arange(len(counts)), fontsize=6)
        axes[row, 1].tick_params(axis="y", labelsize=6)
        axes[row, 1].set_title(f"purity {info['purity']:.2f}  entropy {info['entropy']:.2f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
