"""`treediff report <run_dir>`: (re)build the run's report page, `<run_dir>/report.html`, and each
sweep's page (`<run_dir>/sweeps/<name>/sweep.html`) from the run directory alone: no Ray, no GPU,
no data set (the page reads the files the jobs wrote; see treediff/report/page.py)."""
from __future__ import annotations

from pathlib import Path

from .errors import JobError


def run_dir_of(args: list[str]) -> Path:
    """The run directory from `treediff report <run_dir>` or `treediff report run_dir=<run_dir>`."""
    paths = [a.split("=", 1)[1] if a.startswith("run_dir=") else a for a in args if not a.startswith("-")]
    if len(paths) != 1:
        raise JobError("usage: treediff report <run_dir>   (the run directory a pipeline, grow or evaluate wrote)")
    return Path(paths[0])


def main(args: list[str]) -> int:
    from treediff.report.page import build, build_sweep

    run_dir = run_dir_of(args)
    page = build(run_dir)
    print(f"[report] {page}", flush=True)
    for results in sorted((run_dir / "sweeps").glob("*/results.csv")):
        print(f"[report] {build_sweep(results.parent)}", flush=True)
    return 0
