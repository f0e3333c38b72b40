"""TensorBoard from rank 0 (and the driver): scalars, text, images, the tree as a figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class TBLogger:
    def __init__(self, logdir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir))

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"{prefix}{k}", v, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text.replace("\n", "  \n"), step)

    def images(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        """images (N, C, H, W) in [-1, 1], as one grid."""
        from torchvision.utils import make_grid

        grid = make_grid(((images.detach().float().cpu().clamp(-1, 1) + 1) / 2), nrow=nrow, padding=1, pad_value=1.0)
        self.writer.add_image(tag, grid, step)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        self.writer.add_figure(tag, fig, step, close=True)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float], run_name: str) -> None:
        """One row of TensorBoard's HParams table (a sweep cell)."""
        self.writer.add_hparams(params, metrics, run_name=run_name)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tree_figure(tree, sizes: dict[int, int] | None = None):
    """The tree as a matplotlib figure: nodes by heap id, leaves annotated with their sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = tree.bfs()
    depth = {i: (i + 1).bit_length() - 1 for i in nodes}
    leaves = tree.leaves
    x: dict[int, float] = {leaf: float(k) for k, leaf in enumerate(leaves)}
    for i in sorted(nodes, key=lambda n: -depth[n]):
        kids = tree.children(i)
        if kids:
            x[i] = sum(x[c] for c in kids) / len(kids)
    fig, ax = plt.subplots(figsize=(max(4, len(leaves) * 0.9), 1 + 0.9 * max(depth.values())))
    for i in nodes:
        for c in tree.children(i):
            ax.plot([x[i], x[c]], [-depth[i], -depth[c]], color="grey", lw=1)
    for i in nodes:
        label = str(i) if i not in leaves or not sizes else f"{i}\n{sizes.get(i, 0)}"
        ax.text(x[i], -depth[i], label, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc="lightyellow" if i in leaves else "white", ec="grey"))
    ax.set_axis_off()
    ax.set_xlim(-0.7, len(leaves) - 0.3)
    ax.set_ylim(-max(depth.values()) - 0.6, 0.6)
    fig.tight_layout()
    return fig
