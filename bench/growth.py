"""A growth phase's step (only the new subtree trains) against a full-tree step, depths 2..5.

    .venv/bin/python bench/growth.py [--batch 64] [--steps 5] [--threads 2] [--model tree_mnist]

The reference MNIST CNN-TreeVAE (28x28; configs/model/tree_mnist.yaml) grown breadth-first into
a complete tree of depth d-1, then one leaf split: the phase that grows the tree to depth d.
Times one optimiser step (forward, backward, Adam) of that phase, where the path above the new
subtree runs without gradients and only the subtree's modules update, against one step of the
whole tree (what retraining everything at every phase would cost). The ratio must fall as the
tree grows (target <= 0.6x from depth 3 on).
"""
from __future__ import annotations

import argparse

import torch

from common import default_config, grown_tree, step_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="tree_mnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = default_config(f"model={args.model}").model
    x = torch.rand(args.batch, cfg.in_channels, cfg.image_size, cfg.image_size) * 2 - 1
    print(f"growth phase vs full tree, {args.model} ({cfg.image_size}x{cfg.image_size}), batch {args.batch}, "
          f"{args.threads} threads, {args.steps} steps each:")
    for d in range(2, 6):
        model = grown_tree(cfg, 2 ** (d - 1))  # complete to depth d-1
        leaf = min(model.tree.leaves)
        model.split(leaf)  # the phase that reaches depth d
        full = step_seconds(model, None, x, args.steps)
        sub = step_seconds(model, leaf, x, args.steps)
        print(f"  depth {d}: {len(model.tree.leaves):2d} leaves, subtree step {sub * 1e3:7.1f} ms | full-tree step "
              f"{full * 1e3:7.1f} ms   ratio subtree/full = {sub / full:.2f}x")


if __name__ == "__main__":
    main()
