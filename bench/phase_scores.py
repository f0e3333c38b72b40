"""Where a growth gains or loses: every phase checkpoint of a `treediff grow` run scored on the
test split, and (--features) k-means on the tree's own encoder features beside the tree.

    python bench/phase_scores.py RUN_DIR                       # NMI / ACC / leaf purity per phase
    python bench/phase_scores.py RUN_DIR --features first last # + k-means(k) on d_0 and on the root's
                                                               #   posterior mean at those phases

The run's own config.yaml names the data set and split, so the scores are those `grow` would print
for a tree stopped at that phase. k-means (k = the number of classes, 10 restarts, scikit-learn) is
fit on the training images' features and scored on the test split's: how much the encoder already
separates, against what the tree's leaves make of it (bench/NMI_SEARCH.md, 2026-12-07).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the project, on sys.path
    sys.path.insert(0, str(ROOT))

from jobs.data import load_split  # noqa: E402
from jobs.schema import DataConfig  # noqa: E402
from treediff.data.tensors import to_model_range  # noqa: E402
from treediff.metrics.baselines import kmeans_baseline  # noqa: E402
from treediff.metrics.clustering import cluster_acc, leaf_purity, nmi  # noqa: E402
from treediff.vae.trainer import PHASE_RE, complete_phases, leaf_assignments, load_tree_model  # noqa: E402


def phases(run_dir: Path) -> list[Path]:
    """The run's complete phase checkpoints in the order they were written (tree/phase-NNN-kind...)."""
    found = complete_phases(run_dir / "tree")
    if not found:
        raise SystemExit(f"{run_dir / 'tree'} holds no phase checkpoints: is {run_dir} a `treediff grow` run dir?")
    return found


def pick(found: list[Path], spec: str) -> Path:
    """first, last, or a phase number (as in phase-NNN)."""
    if spec in ("first", "last"):
        return found[0] if spec == "first" else found[-1]
    match = [p for p in found if spec.isdigit() and int(PHASE_RE.match(p.name).group(1)) == int(spec)]
    if not match:
        raise SystemExit(f"--features {spec}: no such phase (first, last, or one of "
                         f"{', '.join(PHASE_RE.match(p.name).group(1) for p in found)})")
    return match[0]


@torch.no_grad()
def features(model, images: np.ndarray, batch: int = 1000) -> dict[str, np.ndarray]:
    """d_0 (the encoder's bottom-up output) and the root's posterior mean, one row per image."""
    out: dict[str, list[np.ndarray]] = {"d_0": [], "root mean": []}
    for i in range(0, len(images), batch):
        d = model.bottom_up(to_model_range(images[i:i + batch]))
        mu, _ = model.dense["0"](d[0])
        out["d_0"].append(d[0].flatten(1).numpy())
        out["root mean"].append(mu.flatten(1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def kmeans_scores(model, train, test, k: int) -> dict[str, tuple[float, float]]:
    """The pixel baseline's k-means (treediff/metrics/baselines.py) on each of the model's features."""
    f_train, f_test = features(model, train.images), features(model, test.images)
    scores = {name: kmeans_baseline(f_train[name], f_test[name], test.labels, k) for name in f_train}
    return {name: (s["nmi"], s["acc"]) for name, s in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--features", nargs="*", default=[], metavar="PHASE",
                    help="phases (first, last, or a number) at which to fit k-means on the encoder's features")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = args.run_dir / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"{config} not found: is {args.run_dir} a `treediff grow` run dir?")
    plain = yaml.safe_load(config.read_text())
    if not isinstance(plain, dict) or not isinstance(plain.get("data"), dict):
        raise SystemExit(f"{config} has no data section: is {args.run_dir} a `treediff grow` run dir?")
    found = phases(args.run_dir)
    data = DataConfig(**plain["data"])
    test = load_split(data, "test")
    if test.labels is None:
        raise SystemExit(f"{data.name}'s test split has no labels: nothing to score against")
    labels, x_test = np.asarray(test.labels), to_model_range(test.images)
    wanted = {pick(found, p) for p in args.features}
    train = load_split(data, "train") if wanted else None
    k = len(np.unique(labels))
    print(f"{args.run_dir}: {len(found)} phases, {len(test)} test images of {data.name}", flush=True)
    for path in found:
        model = load_tree_model(path)
        leaf = leaf_assignments(model, x_test)
        line = (f"{path.name:30s} leaves {len(model.tree.leaves):2d}  NMI {nmi(labels, leaf):.3f}  "
                f"ACC {cluster_acc(labels, leaf):.3f}  leaf purity {leaf_purity(labels, leaf):.3f}")
        if path in wanted:
            line += "".join(f"  | k-means({k}) on {name}: NMI {s[0]:.3f} ACC {s[1]:.3f}"
                            for name, s in kmeans_scores(model, train, test, k).items())
        print(line, flush=True)


if __name__ == "__main__":
    main()
