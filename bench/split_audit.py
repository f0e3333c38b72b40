"""Did each growth split pick the leaf that most needed it? An audit of grown trees with labels.

    .venv/bin/python bench/split_audit.py RUN_DIR [RUN_DIR ...] [--threads 2]

The growth splits the expandable leaf with the most training samples at P(l | x) >= min(1/n_eff,
0.5) (the reference rule; labels are never used). For every split of every run this rebuilds the
tree as it stood just before the split (the previous phase's checkpoint), recomputes those
samples per leaf on the run's own training images, and prints each leaf's size, class purity and
"mixed" count (samples outside the leaf's majority class). The last line says in how many
decisions the rule's leaf was also the most mixed leaf that could be split (above growth.max_depth):
the leaf a label-aware oracle would split. A rule other than "most samples" can only help where the
two differ.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.data import load_split  # noqa: E402
from jobs.schema import DataConfig  # noqa: E402
from treediff.data.tensors import to_model_range  # noqa: E402
from treediff.tree import depth  # noqa: E402
from treediff.vae.growth import effective_leaves, leaf_threshold  # noqa: E402
from treediff.vae.trainer import PHASE_RE, load_tree_model, predict_leaf_probs  # noqa: E402


def audit(run: Path) -> list[tuple[int, int]]:
    if not (run / "config.yaml").is_file() or not (run / "tree").is_dir():
        raise SystemExit(f"{run}: not a grown run directory (it needs config.yaml and tree/: `treediff grow run_dir={run}`)")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = load_split(DataConfig(**cfg["data"]), "train")
    if data.labels is None:
        raise ValueError(f"{run}: the training split of {data.name} has no labels to audit with")
    x = to_model_range(data.images)
    phases = sorted(p for p in (run / "tree").iterdir() if p.is_dir() and PHASE_RE.match(p.name))
    picks = []
    for before, phase in zip(phases, phases[1:]):
        m = PHASE_RE.match(phase.name)
        if m.group(2) != "subtree":
            continue
        model = load_tree_model(before)
        probs = predict_leaf_probs(model, x)
        thr = leaf_threshold(effective_leaves(probs, cfg["growth"]["effective_leaf_mass"]))
        rows = {}
        for j, leaf in enumerate(model.tree.leaves):
            counts = np.bincount(data.labels[probs[:, j] >= thr], minlength=len(data.classes))
            if counts.sum():
                rows[leaf] = (int(counts.sum()), counts.max() / counts.sum(), int(counts.sum() - counts.max()))
        splittable = [l for l in rows if depth(l) < cfg["growth"]["max_depth"]]
        chosen, mixed = int(m.group(3)), max(splittable, key=lambda l: rows[l][2], default=None)
        picks.append((chosen, mixed))
        table = ", ".join(f"{l}: n {n} purity {p:.2f} mixed {k}" for l, (n, p, k) in rows.items())
        print(f"{run.name}/{phase.name}: split {chosen}, most mixed of those splittable {mixed} | {table}", flush=True)
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    picks = [p for run in args.runs for p in audit(run)]
    same = sum(chosen == mixed for chosen, mixed in picks)
    print(f"{same} of {len(picks)} splits took the most mixed leaf ({len(args.runs)} runs)")


if __name__ == "__main__":
    main()
