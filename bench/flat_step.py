"""A training step of the CNN-TreeVAE (tree_mnist) against the original TreeVAE's flat latents
(tree_mnist_flat), at 2, 4 and 10 leaves, as Fashion-MNIST's trees train.

    .venv/bin/python bench/flat_step.py [--batch 256] [--threads 2] [--steps 5] [--rounds 3]

Each tree is split breadth-first to the leaf count (fresh weights, seed 0) and timed for one
optimiser step of the whole tree (forward, loss, backward, Adam) on a grey batch laid out as the
training loop's (strides (784, 1, 28, 1)). The two models are timed in turn over --rounds rounds
and each one's median printed, with the ratio: how many more steps the flat tree gets in the same
time (why it was grown on Fashion-MNIST, bench/NMI_SEARCH.md; no preset uses it).
"""
from __future__ import annotations

import argparse
from statistics import median

import torch

from common import default_config, grown_tree, step_seconds

MODELS = ("tree_mnist", "tree_mnist_flat")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the loop's grey batch: H x W x C images permuted to C x H x W, a no-op copy for C = 1
    x = (torch.rand(args.batch, 28, 28, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1).permute(0, 3, 1, 2)
    print(f"one training step of the whole tree, batch {args.batch}, {args.threads} threads, "
          f"median of {args.rounds} rounds of {args.steps} steps")
    print(f"{'leaves':>6s}  " + "  ".join(f"{m:>16s}" for m in MODELS) + "  ratio")
    for leaves in (2, 4, 10):
        models = {m: grown_tree(default_config(f"model={m}").model, leaves) for m in MODELS}
        times = {m: [] for m in MODELS}
        for _ in range(args.rounds):
            for m in MODELS:
                times[m].append(step_seconds(models[m], None, x, args.steps))
        ms = {m: 1000 * median(times[m]) for m in MODELS}
        print(f"{leaves:6d}  " + "  ".join(f"{ms[m]:13.0f} ms" for m in MODELS)
              + f"  {ms[MODELS[0]] / ms[MODELS[1]]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
