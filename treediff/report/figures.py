"""The report page's figures (matplotlib, Agg), each returned as PNG bytes or a Figure."""
from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ..tree import depth as heap_depth  # noqa: E402


def png(fig, dpi: int = 100) -> bytes:
    """A figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def tree_layout(tree) -> tuple[dict[int, float], dict[int, int]]:
    """Each node's x and depth: leaves left to right in depth-first order (not by heap id), each
    router above the mean of its children, so that no two edges cross."""
    nodes = tree.bfs()
    depth = {i: heap_depth(i) for i in nodes}
    ordered: list[int] = []
    stack = [0]
    while stack:
        i = stack.pop()
        kids = tree.children(i)
        if kids:
            stack.extend(reversed(kids))
        else:
            ordered.append(i)
    x: dict[int, float] = {leaf: float(k) for k, leaf in enumerate(ordered)}
    for i in sorted(nodes, key=lambda n: -depth[n]):
        kids = tree.children(i)
        if kids:
            x[i] = sum(x[c] for c in kids) / len(kids)
    return x, depth


def tree_figure(tree, sizes: dict[int, int] | None = None):
    """The tree: nodes by heap id, leaves (yellow) annotated with their sizes."""
    nodes = tree.bfs()
    leaves = tree.leaves
    x, depth = tree_layout(tree)
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


def strip(images: np.ndarray, scale: int = 0, k: int = 6) -> bytes:
    """The first k uint8 images (k, 3, H, W) side by side as one PNG, enlarged (nearest) to >= 32 px high."""
    images = np.asarray(images, dtype=np.uint8)[:k]
    k, _, h, w = images.shape
    gap = np.full((h, 1, 3), 255, np.uint8)
    row = np.concatenate([part for img in images for part in (img.transpose(1, 2, 0), gap)][:-1], axis=1)
    scale = scale or max(1, -(-32 // h))
    image = Image.fromarray(row).resize((row.shape[1] * scale, h * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def histogram(counts: list[int] | np.ndarray, classes: list[str], title: str) -> bytes:
    """A class histogram (shares of the counts) as a small bar chart."""
    counts = np.asarray(counts, dtype=float)
    fig, ax = plt.subplots(figsize=(2.2, 1.1))
    ax.bar(np.arange(len(counts)), counts / max(1.0, counts.sum()), color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_xticks(np.arange(len(counts)))
    ax.set_xticklabels(classes[:len(counts)] if classes else np.arange(len(counts)), fontsize=5,
                       rotation=90 if classes and max(map(len, classes)) > 2 else 0)
    ax.tick_params(axis="y", labelsize=5)
    ax.set_title(title, fontsize=6)
    fig.tight_layout(pad=0.3)
    return png(fig, dpi=100)


def curves(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str = "loss") -> bytes:
    """Several (step, value) series on one axis, e.g. a stage's loss per phase or mode."""
    fig, ax = plt.subplots(figsize=(6, 2.6))
    for name, points in series.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, lw=1, label=name, marker="." if len(points) < 30 else None)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if len(series) <= 12:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return png(fig)


def timeline(phases: list[dict[str, Any]]) -> bytes:
    """The growth's phases as bars over wall time: name, start (s), seconds in steps, overhead."""
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(phases) + 0.9))
    colours = {"initial": "tab:blue", "subtree": "tab:green", "intermediate": "tab:orange",
               "fulltrain": "tab:orange", "finetune": "tab:red", "prune": "tab:grey"}
    for row, p in enumerate(phases):
        ax.barh(row, p["steps_s"], left=p["start"], color=colours.get(p["kind"], "tab:purple"), height=0.6)
        if p["overhead_s"] > 0:
            ax.barh(row, p["overhead_s"], left=p["start"] - p["overhead_s"], color="lightgrey", height=0.6)
    ax.set_yticks(range(len(phases)))
    ax.set_yticklabels([p["name"] for p in phases], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first phase began (grey: before the phase's steps)", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return png(fig)
