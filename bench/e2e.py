"""The embedded default's tree growth end to end: on Ray (2 Ray Train + DeepSpeed workers, one
worker group for the whole growth) against the same growth in one process, same config.

Runs `treediff grow` twice as a user would (a fresh run directory each), then reads what every
phase checkpoint records: `step_seconds` (time inside the phase's optimiser steps) and
`trained_at` (wall clock when its training ended). A phase's overhead is its wall time (from the
previous trained phase's end to its own: counting P(leaf | x), the split, the checkpoint, the
engine and loader set-up, reporting to Ray Train) minus its step time.

    python bench/e2e.py                  # the embedded default (the digits preset), ~10 min on 2 cores
    python bench/e2e.py optim.epochs_subtree=5   # any override goes to both runs

Prints the wall times, their ratio (target <= 1.25x), and the median per-phase overhead on Ray
(target <= 3 s), beside the in-process one. Ray follows trainer.batch_scaling, which the script
prints: on the CPU default (linear) each worker steps on the whole configured batch, so Ray takes
half the optimiser steps over the same images; `python bench/e2e.py trainer.batch_scaling=fixed`
splits the batch over the workers instead (the one-process run ignores trainer settings).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent


def treediff(job: str, run_dir: Path, shards: Path, overrides: list[str]) -> float:
    """Seconds `treediff <job>` took (its output in <run_dir>.log)."""
    t0 = time.perf_counter()
    log = run_dir.parent / f"{run_dir.name}.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "jobs.cli", job, f"run_dir={run_dir}", f"shards.path={shards}",
                               *overrides], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"treediff {job} failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def phases(run_dir: Path) -> list[dict]:
    """meta.json of every trained phase, in order."""
    metas = []
    for p in sorted((run_dir / "tree").glob("phase-*")):
        meta = json.loads((p / "meta.json").read_text())
        if "step_seconds" in meta:
            metas.append(meta | {"name": p.name})
    return metas


def overheads(metas: list[dict]) -> list[float]:
    return [(b["trained_at"] - a["trained_at"]) - b["step_seconds"] for a, b in zip(metas, metas[1:])]


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        tmp = Path(tmp)
        shards = tmp / "shards"
        treediff("prepare", tmp / "prepare", shards, overrides)  # the shards once, outside both timings
        ray_wall = treediff("grow", tmp / "ray", shards, ["cluster=local", *overrides])
        one_wall = treediff("grow", tmp / "one", shards, ["cluster=inprocess", "threads=2", *overrides])
        ray, one = phases(tmp / "ray"), phases(tmp / "one")
        ray_over, one_over = overheads(ray), overheads(one)
        policy = [line for line in (tmp / "ray.log").read_text().splitlines() if "trainer.batch_scaling=" in line]
        ray_metrics = json.loads((tmp / "ray" / "metrics.json").read_text())["tree"]
        one_metrics = json.loads((tmp / "one" / "metrics.json").read_text())["tree"]
    print(f"overrides: {' '.join(overrides) or '(none: the embedded default)'}")
    # what the Ray driver said of its batch (nothing when the configured batch is split over the workers)
    print(f"batch on Ray: {policy[0].removeprefix('[grow] ') if policy else 'optim.batch_size, split over the workers'}")
    print(f"{'':26s}{'Ray, 2 workers':>16s}{'one process':>14s}")
    print(f"{'grow wall time (s)':26s}{ray_wall:16.1f}{one_wall:14.1f}")
    print(f"{'trained phases':26s}{len(ray):16d}{len(one):14d}")
    print(f"{'time in steps (s)':26s}{sum(m['step_seconds'] for m in ray):16.1f}{sum(m['step_seconds'] for m in one):14.1f}")
    print(f"{'median phase overhead (s)':26s}{median(ray_over):16.2f}{median(one_over):14.2f}")
    print(f"{'max phase overhead (s)':26s}{max(ray_over):16.2f}{max(one_over):14.2f}")
    for part in ("setup", "count", "save"):
        values = [m.get(f"{part}_seconds", 0.0) for m in ray]
        print(f"{'median ' + part + ' (s)':26s}{median(values):16.2f}{'':>14s}")
    print(f"{'test NMI':26s}{ray_metrics['nmi']:16.3f}{one_metrics['nmi']:14.3f}")
    print(f"Ray / one process wall time: {ray_wall / one_wall:.2f}x (target <= 1.25x; before one worker group: 2.9x)")
    print(f"median per-phase overhead on Ray: {median(ray_over):.2f} s (target <= 3 s; before: ~57 s)")


if __name__ == "__main__":
    main(sys.argv[1:])
