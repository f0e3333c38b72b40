"""`treediff sweep` on a local Ray cluster: 2 x 2 cells (DDIM steps x guidance weight), the driver
killed after the first cell, re-run: finished cells are kept as they are, the rest computed."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jobs.cli import JobError, run_job

from eval_helpers import DIFFUSION_OVERRIDES, tiny_run


def sweep_args(tmp_path):
    return [f"run_dir={tmp_path / 'run'}", f"eval.cache_dir={tmp_path / 'fid'}", f"shards.path={tmp_path / 'shards'}",
            "shards.samples_per_shard=500", "cluster=local", "cluster.num_cpus=2",
            "model.latent_channels=4", "model.bottom_up_channels=8", "model.max_depth=3", *DIFFUSION_OVERRIDES,
            "eval.extractor=pixels", "eval.classifier=false", "eval.workers=1", "eval.chunk_size=16",
            "sweep.name=grid", "sweep.steps=[20,40]", "sweep.w=[1.0,2.0]", "sweep.num_samples=64"]


def test_sweep_resumes_without_recomputing_finished_cells(tmp_path):
    tiny_run(tmp_path / "run")
    args = sweep_args(tmp_path)
    cells = tmp_path / "run" / "sweeps" / "grid" / "cells"
    log = tmp_path / "first.log"
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "sweep", *args], start_new_session=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (cells.is_dir() and list(cells.glob("*.json"))):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "no sweep cell finished in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    proc.wait(timeout=60)
    kept = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in cells.glob("*.json")}
    assert 1 <= len(kept) < 4, f"the kill should land mid-sweep; cells done: {sorted(kept)}"
    assert not list(cells.glob(".tmp-*"))  # cells are written whole or not at all

    rows = run_job("sweep", args)

    assert len(rows) == 4 and {(r["steps"], r["w"]) for r in rows} == {(20, 1.0), (20, 2.0), (40, 1.0), (40, 2.0)}
    for name, (stamp, text) in kept.items():  # finished cells were not recomputed
        assert (cells / name).stat().st_mtime_ns == stamp and (cells / name).read_text() == text
    assert len(list(cells.glob("*.json"))) == 4
    for r in rows:
        assert r["n"] == 64 and r["fid"] > 0 and r["checkpoint"] == "path"
    # different sampler settings give different images
    assert len({round(r["fid"], 6) for r in rows}) == 4
    out = tmp_path / "run" / "sweeps" / "grid"
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["cell"] for t in table] == [r["cell"] for r in rows]
    assert "| cell | checkpoint | steps |" in (out / "results.md").read_text()
    assert (tmp_path / "run" / "tb" / "sweep" / "grid").is_dir()

    # a third run computes nothing
    again = run_job("sweep", args)
    assert [json.dumps(r, sort_keys=True) for r in again] == [json.dumps(r, sort_keys=True) for r in rows]


def test_bad_sweep_values_are_named(tmp_path):
    tiny_run(tmp_path / "run")
    base = [a for a in sweep_args(tmp_path) if not a.startswith("cluster")] + ["cluster=inprocess"]
    with pytest.raises(JobError, match="sweep.steps"):
        run_job("sweep", base + ["sweep.steps=[0]"])
    with pytest.raises(JobError, match=r"sweep.steps: must all be <= diffusion.T=50, got \[500\]"):
        run_job("sweep", base + ["sweep.steps=[500]"])  # refused when the config is composed
    with pytest.raises(FileNotFoundError, match="diffusion/nope"):
        run_job("sweep", base + ["sweep.checkpoints=[nope]"])
