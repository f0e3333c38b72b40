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


def growth_logger(tb: TBLogger):
    """The growth's logger: console lines for decisions, and to TensorBoard the tree after every
    phase, the leaf sizes behind every split, in-process epochs' scalars."""
    from treediff.vae.trainer import _print_logger

    phase = {"step": 0}  # the last phase checkpoint written

    def log(event: str, data: dict) -> None:
        _print_logger(event, data)
        if event == "phase":
            phase["step"] = step = int(data["name"].split("-")[1])
            from treediff.report.figures import tree_figure  # matplotlib: imported when first drawn
            tb.figure("tree/topology", tree_figure(_tree_of(data["tree"])), step)
            tb.scalars({"leaves": len(data["leaves"])}, step, prefix="tree/")
        elif event == "decision" and data.get("counts"):  # the samples each leaf holds when a split is chosen
            tb.scalars({f"leaf_size/{leaf}": n for leaf, n in data["counts"].items()}, phase["step"], prefix="tree/")
        elif event == "epoch":  # in-process phases
            step = data["epoch"]
            tb.scalars({k: v for k, v in data.items() if k not in ("phase", "epoch")}, step,
                       prefix=f"tree/{data['phase']}/")
        tb.flush()
    return log


def _tree_of(nodes: list[int]):
    from treediff.tree import Tree
    return Tree(set(nodes))


def growth_logger_at(logdir: str):
    """growth_logger on a TensorBoard writer of its own at `logdir` (built where it logs: a worker)."""
    return growth_logger(TBLogger(logdir))
