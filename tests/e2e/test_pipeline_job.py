"""End-to-end `treediff pipeline` / `treediff diffuse` on the embedded default (digits), shortened."""
import json
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from jobs.cli import JobError, run_job
from pipeline_helpers import DIFFUSE, GROW

def test_pipeline_trains_both_modes_and_writes_leaf_grids(pipeline_run):
    run_dir, report = pipeline_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tree"]["nmi"] == pytest.approx(report["tree"]["nmi"])
    leaves = metrics["tree"]["leaves"]
    assert len(leaves) >= 2
    for mode in ("path", "recon"):
        entry = metrics["diffusion"][mode]
        assert entry["steps"] == 40 and entry["leaves"] == leaves
        assert entry["loss_end"] < entry["loss_start"]  # eps-MSE falls from ~1
        assert (run_dir / "diffusion" / mode / "ema.pt").is_file()
        png = Image.open(run_dir / "samples" / f"{mode}_leaves.png")
        # a row per leaf of 3 tiles, 8x8 upscaled to 32x32, 2-pixel padding, 44-pixel label margin
        assert png.size == (44 + 3 * 34 + 2, len(leaves) * 34 + 2)
    assert (run_dir / "samples" / "treevae_leaves.png").is_file()


def test_the_digits_quick_preset_runs_end_to_end(pipeline_run):
    # the shared run is `treediff pipeline experiment=digits_quick`: the preset's data, model and
    # evaluation, its growth (subtree phases, up to 4 leaves) and a finetune at the end
    run_dir, report = pipeline_run
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["image_size"] == 8 and config["eval"]["extractor"] == "pixels"
    assert config["growth"]["num_clusters_tree"] == 4 and config["optim"]["min_steps_subtree"] == 0
    phases = sorted(p.name for p in (run_dir / "tree").glob("phase-*"))
    assert phases[0] == "phase-000-initial" and phases[-1].endswith("-finetune")
    assert any("-subtree-" in p for p in phases)
    assert 2 <= len(report["tree"]["leaves"]) <= 4
    assert (run_dir / "eval" / "report.md").is_file()


def test_pipeline_ends_with_an_evaluation_report(pipeline_run):
    run_dir, report = pipeline_run
    ev = report["eval"]
    assert ev["classifier"]["test_acc"] > 0.8  # digits are easy for the purity classifier
    leaves = report["tree"]["leaves"]
    for mode in ("path", "recon"):
        r = ev["checkpoints"][mode]
        for kind in ("generation", "recon"):
            assert r[kind]["n"] == 32 and r[kind]["label"].startswith("pixel-FD (not Inception FID)-32 vs digits test")
            assert 0 < r[kind]["fid"] < 100 and r[kind]["fid_treevae"] > 0
        purity = r["leaf"]["purity"]
        assert sorted(purity["leaves"]) == leaves and all(v["n"] == 8 for v in purity["leaves"].values())
        assert 0 < purity["mean_purity"] <= 1 and sorted(r["leaf"]["fid"]) == leaves
        # the diagnostics: decodings' purity, high-probability draws, purity against the ceiling, the guidance sweep
        assert 0 < r["leaf"]["purity_treevae"] <= 1 and 0 < r["generation"]["mean_purity_treevae"] <= 1
        assert 0 < r["leaf"]["draws"]["min_leaf_prob"] <= r["leaf"]["draws"]["mean_leaf_prob"] <= 1
        assert r["leaf"]["purity_vs_ceiling"] == pytest.approx(purity["mean_purity"] / ev["ceiling"]["per_leaf_mean"])
        assert r["generation"]["purity_vs_ceiling"] == pytest.approx(
            r["generation"]["mean_purity"] / ev["ceiling"]["mean_purity"])
        sweep = r["guidance"]["w"]
        assert sorted(sweep) == ["0", "1"] and sweep["1"]["fid"] == pytest.approx(r["generation"]["fid"])
        assert all(v["fid"] > 0 and 0 < v["mean_purity"] <= 1 for v in sweep.values())
    # the ceiling is the tree's own purity on the real test images (the grow job's leaf purity)
    assert ev["ceiling"]["mean_purity"] == pytest.approx(report["tree"]["leaf_purity"])
    assert ev["ceiling"]["n"] == 360  # the whole digits test split
    conf = ev["confusion"]
    matrix = conf["matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == ev["ceiling"]["n"]
    assert conf["accuracy"] == pytest.approx(ev["classifier"]["test_acc"])
    assert (run_dir / "eval" / "confusion.png").stat().st_size > 1000
    floor = ev["fid_floor"]
    assert floor["n"] == 32 and 0 < floor["fid"] < r["generation"]["fid_treevae"]  # real images beat the decodings
    md = (run_dir / "eval" / "report.md").read_text()
    assert f"NMI {report['tree']['nmi']:.3f}" in md and "per-leaf purity (mean)" in md
    assert "Ceiling:" in md and "FID floor" in md and "guidance w = 0" in md
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval"]["path"]["generation"]["fid"] == pytest.approx(ev["checkpoints"]["path"]["generation"]["fid"])
    assert (run_dir / "eval" / "purity_path.png").stat().st_size > 1000


def test_evaluate_reuses_the_cached_reference_and_the_classifier(pipeline_run, capsys):
    run_dir, report = pipeline_run
    stamp = (run_dir / "classifier" / "model.pt").stat().st_mtime_ns
    again = run_job("evaluate", [f"run_dir={run_dir}", f"eval.cache_dir={run_dir.parent / 'fid'}",
                                 "eval.checkpoints=[path]", "eval.modes=[generation]"] + GROW + DIFFUSE)
    out = capsys.readouterr().out
    assert "reference statistics from the cache" in out
    assert (run_dir / "classifier" / "model.pt").stat().st_mtime_ns == stamp
    # same seeds, same samples: the same FID as the pipeline's evaluation
    assert again["checkpoints"]["path"]["generation"]["fid"] == pytest.approx(
        report["eval"]["checkpoints"]["path"]["generation"]["fid"], rel=1e-6)
    # recon was not re-scored: its results are carried over (same settings, same weights), in the
    # report and in metrics.json, so re-scoring one checkpoint loses nothing of the other
    assert "kept the earlier results of recon" in out
    assert again["checkpoints"]["recon"] == json.loads(json.dumps(report["eval"]["checkpoints"]["recon"], default=str))
    on_disk = json.loads((run_dir / "eval" / "report.json").read_text())["checkpoints"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert set(on_disk) == set(metrics) == {"path", "recon"}


def test_evaluate_names_a_missing_checkpoint(pipeline_run):
    run_dir, _ = pipeline_run
    with pytest.raises(FileNotFoundError, match="diffusion/bogus"):
        run_job("evaluate", [f"run_dir={run_dir}", "eval.checkpoints=[bogus]"] + GROW + DIFFUSE)


def test_diffuse_reuses_a_complete_checkpoint(pipeline_run, capsys):
    run_dir, _ = pipeline_run
    weights = run_dir / "diffusion" / "path" / "model.pt"
    stamp = weights.stat().st_mtime_ns
    run_job("diffuse", [f"run_dir={run_dir}"] + GROW + DIFFUSE)
    assert weights.stat().st_mtime_ns == stamp
    assert "complete checkpoint" in capsys.readouterr().out


def test_diffuse_needs_a_grown_tree(tmp_path):
    with pytest.raises(FileNotFoundError, match="treediff grow"):
        run_job("diffuse", [f"run_dir={tmp_path / 'empty'}", "cluster=inprocess"] + DIFFUSE)


def test_bad_diffusion_config_stops_the_pipeline_before_the_tree(tmp_path):
    for override, field in [("sampler.steps=2000", "sampler.steps"),
                            ("diffusion.attention_resolutions=[3]", "diffusion.attention_resolutions"),
                            ("pipeline.modes=[path,bogus]", "pipeline.modes")]:
        with pytest.raises(JobError, match=field):
            run_job("pipeline", [f"run_dir={tmp_path / 'run'}", "cluster=inprocess", override])
    assert not (tmp_path / "run").exists()


def test_changed_tree_is_refused_by_the_command(pipeline_run, tmp_path):
    run_dir, _ = pipeline_run
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    # the copy's diffusion checkpoints record the original tree; point them at the copy's tree,
    # then change the copy's tree weights
    for meta_path in (copy / "diffusion").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        meta["tree_checkpoint"] = meta["tree_checkpoint"].replace(str(run_dir), str(copy))
        meta_path.write_text(json.dumps(meta))
    tree_dir = sorted((copy / "tree").glob("phase-*-finetune"))[-1]
    state = torch.load(tree_dir / "model.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] += 1
    torch.save(state, tree_dir / "model.pt")
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "diffuse", f"run_dir={copy}"] + GROW + DIFFUSE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "treediff diffuse: error:" in proc.stderr and str(tree_dir) in proc.stderr
    assert "does not match" in proc.stderr and "Traceback" not in proc.stderr
