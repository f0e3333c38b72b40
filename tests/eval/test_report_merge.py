"""Re-scoring some checkpoints keeps the others' earlier results when they are still valid
(jobs/evaluate.py keep_earlier): same settings, the checkpoint still complete, its weights unchanged."""
from __future__ import annotations

import json
import os

import pytest

from jobs.evaluate import keep_earlier, weights_stamp
from treediff.checkpoint import CONFIG, META, TREE, WEIGHTS
from treediff.diffusion.trainer import EMA_FILE

SETTINGS = {"extractor": "inception", "reference": "digits test", "n_reference": 360,
            "sampler": {"steps": 50, "eta": 0.0, "w": 1.0}, "seed": 0}


def checkpoint(run_dir, name):
    d = run_dir / "diffusion" / name
    d.mkdir(parents=True)
    for f in (WEIGHTS, TREE, CONFIG, META, EMA_FILE):
        (d / f).write_bytes(b"x" * 8)
    return d


@pytest.fixture
def run(tmp_path):
    """An earlier report of two checkpoints; this evaluation re-scored `path` only."""
    path, recon = checkpoint(tmp_path, "path"), checkpoint(tmp_path, "recon")
    earlier = SETTINGS | {"checkpoints": {"path": {"generation": {"fid": 50.0}, "weights": weights_stamp(path)},
                                          "recon": {"generation": {"fid": 47.0}, "weights": weights_stamp(recon)}}}
    previous = tmp_path / "eval" / "report.json"
    previous.parent.mkdir()
    previous.write_text(json.dumps(earlier))
    now = json.loads(json.dumps(SETTINGS)) | {"checkpoints": {"path": {"generation": {"fid": 46.0}}}}
    return tmp_path, previous, now, recon


def test_the_other_checkpoints_results_are_kept(run, capsys):
    run_dir, previous, now, _ = run
    assert keep_earlier(now, previous, run_dir) == ["recon"]
    assert now["checkpoints"]["path"]["generation"]["fid"] == 46.0  # the new score wins
    assert now["checkpoints"]["recon"]["generation"]["fid"] == 47.0
    assert "kept the earlier results of recon" in capsys.readouterr().out


@pytest.mark.parametrize("change, why", [
    ("seed", "settings differ (seed)"),
    ("sampler", "settings differ (sampler)"),
    ("weights", "weights changed"),
    ("gone", "checkpoint is gone"),
    ("unstamped", "records no weights stamp"),
])
def test_results_that_no_longer_hold_are_dropped_with_the_reason(run, capsys, change, why):
    run_dir, previous, now, recon = run
    if change == "seed":
        now["seed"] = 1
    elif change == "sampler":
        now["sampler"] = now["sampler"] | {"steps": 20}
    elif change == "weights":  # retrained since: new weights
        (recon / WEIGHTS).write_bytes(b"y" * 9)
        os.utime(recon / WEIGHTS, ns=(1, 1))
    elif change == "unstamped":  # a report written before results carried a weights stamp
        earlier = json.loads(previous.read_text())
        del earlier["checkpoints"]["recon"]["weights"]
        previous.write_text(json.dumps(earlier))
    else:
        (recon / EMA_FILE).unlink()
    assert keep_earlier(now, previous, run_dir) == []
    assert list(now["checkpoints"]) == ["path"]
    out = capsys.readouterr().out
    assert "earlier results of recon are dropped" in out and why in out and "eval.checkpoints=[recon]" in out


def test_no_earlier_report_or_an_unreadable_one_keeps_nothing(run, capsys):
    run_dir, previous, now, _ = run
    previous.write_text("{not json")
    assert keep_earlier(now, previous, run_dir) == [] and list(now["checkpoints"]) == ["path"]
    assert "not valid JSON" in capsys.readouterr().out
    previous.unlink()
    assert keep_earlier(now, previous, run_dir) == []
