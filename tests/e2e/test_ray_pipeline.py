"""The real command on the Ray runtime: a local Ray cluster on 127.0.0.1, 2 Ray Train workers,
DeepSpeed ZeRO-1. The driver is killed after the first growth phase and re-run: it resumes at
the next phase, the whole growth runs on one worker group, the diffusion stage trains, the evaluation
farm and the purity classifier run on the same cluster, and checkpoints, the evaluation report
and TensorBoard events (scalars and images) are on disk and read back."""
import json
import os
import signal
import subprocess
import sys
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from console_helpers import ray_lines
from growth_helpers import NO_FLOORS
from jobs.cli import run_job
from treediff.diffusion.trainer import load_denoiser
from treediff.vae.trainer import final_checkpoint, load_tree_model


def ray_args(tmp_path):
    # relative paths, as users type them (the test runs in tmp_path): Ray's workers run elsewhere
    return ["run_dir=run", "shards.path=shards", "shards.samples_per_shard=200",
            # 4 CPUs declared on 2 cores: room for both diffusion modes' 2 workers side by side
            "cluster=local", "cluster.num_cpus=4", "trainer.num_workers=2", "trainer.zero_stage=1",
            "trainer.checkpoint_every=2",
            # a fine-tune longer than the ~3 s a re-run takes to claim the growth: the killed driver's
            # worker group lives on for seconds and may finish the short phases before it, never all
            "optim.epochs_initial=4", "optim.epochs_subtree=2", "optim.epochs_finetune=12", "optim.kl_start=0.1",
            *NO_FLOORS,
            "growth.num_clusters_tree=3", "diffusion.steps=44", "diffusion.warmup_steps=5", "diffusion.batch_size=64",
            "sampler.steps=5", "sampler.samples_per_leaf=2", "pipeline.modes=[path,recon]",
            "eval=smoke", "eval.classifier_epochs=2"]


def tags(path):
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_ray_pipeline_resumes_after_a_killed_driver_and_logs_everything(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    args = ray_args(tmp_path)
    run_dir = tmp_path / "run"
    first = run_dir / "tree" / "phase-000-initial"
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "grow", *args], start_new_session=True, cwd=tmp_path,
                            stdout=open(tmp_path / "first.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 400
    while not first.is_dir():
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "the first phase did not finish in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    proc.wait(timeout=60)
    stamp = (first / "model.pt").stat().st_mtime_ns
    assert not any(p.name.startswith("phase-001") for p in (run_dir / "tree").iterdir())

    capfd.readouterr()
    report = run_job("pipeline", args)
    console = capfd.readouterr()
    text = console.out + console.err
    console = text.splitlines()

    # the console: the project's lines only (a pipeline of 4 phases, 2 diffusion modes and an
    # evaluation in a few dozen lines); Ray's, Ray Train's and DeepSpeed's output is in the logs
    assert not ray_lines(text), text
    assert 10 <= len(console) <= 80, "\n".join(console)
    assert any(line.startswith("[grow] phase-") for line in console), "\n".join(console)  # rank 0's lines, followed on the driver
    logs = run_dir / "logs"
    rank0 = (logs / "tree-rank0.log").read_text()
    assert "real_accelerator" in rank0 and "[progress] tree/" in rank0 and "[grow] split leaf" in rank0
    assert (logs / "tree-rank1.log").is_file()
    for mode in ("path", "recon"):
        assert list(logs.glob(f"*{mode}*-rank0.log")), sorted(p.name for p in logs.iterdir())
    assert (logs / "ray").is_dir() and any((logs / "ray").glob("raylet*.out"))  # the Ray session's own logs

    assert (first / "model.pt").stat().st_mtime_ns == stamp  # the complete phase was not re-run
    phases = sorted(p.name for p in (run_dir / "tree").iterdir() if p.name.startswith("phase-"))
    assert phases[0] == "phase-000-initial" and phases[1].startswith("phase-001-subtree")
    assert phases[-1].endswith("-finetune")
    # the re-run's growth ran as one Ray Train run on one worker group: its phases all on the same
    # two worker processes (the killed driver's group, which Ray reaps within seconds, may have
    # finished a phase before the re-run took the run over, never after: cluster.growth's owner token)
    trained = [p for p in phases if not p.split("-")[2] == "prune"]
    every_meta = {p: json.loads((run_dir / "tree" / p / "meta.json").read_text()) for p in phases}
    metas = {p: every_meta[p] for p in trained}
    assert {m["ray_train_run"] for m in metas.values()} == {"tree"}
    group = tuple(metas[trained[-1]]["worker_group"])
    assert len(group) == 2 and len(set(group)) == 2 and group != tuple(metas["phase-000-initial"]["worker_group"])
    ours = [p for p in trained if tuple(metas[p]["worker_group"]) == group]
    assert ours == trained[len(trained) - len(ours):]  # contiguous, to the end
    # the re-run says where it resumed: after the last phase complete on disk when it took over
    # (phase 0, or a later one the killed driver's group got to finish), and its own splits are on
    # the console as they are taken
    first_of_ours = next(p for p in phases if tuple(every_meta[p]["worker_group"]) == group)  # a prune phase included
    resumed_after = phases[phases.index(first_of_ours) - 1]
    assert any(line.startswith(f"[grow] resuming after {resumed_after}") for line in console), "\n".join(console)
    if any("-subtree-" in p for p in ours):
        assert any(line.startswith("[grow] split leaf") for line in console), "\n".join(console)
    owned = (run_dir / "tree" / ".owner").stat().st_mtime  # when the re-run took the growth over
    assert all(metas[p]["trained_at"] < owned for p in trained if p not in ours)
    assert all(m["step_seconds"] > 0 and m["trained_at"] > 0 for m in metas.values())
    assert sorted(p.name for p in (run_dir / "ray").iterdir() if p.name.startswith("tree")) == ["tree"]
    ckpts = [p for p in (run_dir / "ray" / "tree").glob("checkpoint_*") if p.is_dir()]  # not Ray's snapshot file
    assert ckpts
    for c in ckpts:
        progress = json.loads((c / "progress.json").read_text())
        assert progress["phase"] in {int(p.split("-")[1]) for p in trained} and progress["desc"]
        assert (c / "export.pt").is_file()
        assert len(list((c / "ds").rglob("zero_pp_rank_*optim_states.pt"))) == 2
    model = load_tree_model(final_checkpoint(run_dir))
    manifest_hash = json.loads((final_checkpoint(run_dir) / "meta.json").read_text())["data_manifest_sha256"]
    assert len(manifest_hash) == 64
    assert model.tree.leaves == report["tree"]["leaves"]
    # the diffusion stage, both modes, trained on the Ray runtime side by side (the cluster had room)
    # and loadable with its tree
    metrics = json.loads((run_dir / "metrics.json").read_text())
    spans = [json.loads((run_dir / "diffusion" / m / "meta.json").read_text()) for m in ("path", "recon")]
    assert max(m["train_started_at"] for m in spans) < min(m["train_ended_at"] for m in spans)
    for mode in ("path", "recon"):
        meta = json.loads((run_dir / "diffusion" / mode / "meta.json").read_text())
        # diffusion.steps counts steps of the configured 64: on 2 workers of 64 each (trainer=cpu:
        # batch_scaling linear) the same images take half the optimiser steps
        assert meta["runtime"] == "ray" and meta["workers"] == 2 and meta["steps"] * 64 * meta["workers"] >= 44 * 64
        assert meta["data_manifest_sha256"] == manifest_hash
        assert metrics["diffusion"][mode]["loss_end"] < metrics["diffusion"][mode]["loss_start"]
        denoiser, tree = load_denoiser(run_dir / "diffusion" / mode)
        assert tree.tree.leaves == model.tree.leaves
        assert (run_dir / "samples" / f"{mode}_leaves.png").is_file()
    # TensorBoard: rank-0 scalars per stage, the driver's images, figures and config
    tree_tb = tags(run_dir / "tb" / "tree")
    assert {"tree/initial/loss", "tree/finetune/loss", "tree/initial/images_per_s", "tree/initial/lr"} <= set(
        tree_tb.Tags()["scalars"])
    assert any(t.startswith("tree/initial/kl_node/") for t in tree_tb.Tags()["scalars"])
    assert any(t.startswith("tree/initial/leaf_prob/") for t in tree_tb.Tags()["scalars"])
    assert len(tree_tb.Scalars("tree/initial/loss")) == 4
    diff_tb = tags(run_dir / "tb" / "diffusion")
    assert {"diffusion/path/loss", "diffusion/recon/loss"} <= set(diff_tb.Tags()["scalars"])
    driver = tags(run_dir / "tb" / "driver")
    images = set(driver.Tags()["images"])
    leaf = model.tree.leaves[0]
    assert {"tree/final", "tree/topology", f"samples/leaf_{leaf}", f"diffusion/path/leaf_{leaf}"} <= images
    assert any(t.startswith("reconstructions/leaf_") for t in images)
    assert {"tree/leaves", "tree/leaf_size/1", "tree/leaf_size/2"} <= set(driver.Tags()["scalars"])
    assert driver.Images(f"samples/leaf_{leaf}")[0].encoded_image_string[:4] == b"\x89PNG"
    assert any(t.startswith("config") for t in driver.Tags()["tensors"])
    # the evaluation that ends the pipeline: classifier trained by Ray Train, FIDs from the farm
    assert (run_dir / "ray" / "classifier").is_dir()
    ev = json.loads((run_dir / "eval" / "report.json").read_text())
    assert ev["classifier"]["test_acc"] > 0.5 and ev["tree"]["nmi"] == report["tree"]["nmi"]
    for mode in ("path", "recon"):
        r = ev["checkpoints"][mode]
        assert r["generation"]["n"] == 32 and r["generation"]["fid"] > 0 and "pixel-FD" in r["generation"]["label"]
        assert r["recon"]["n"] == 32 and r["recon"]["fid_treevae"] > 0
        assert sorted(int(k) for k in r["leaf"]["purity"]["leaves"]) == model.tree.leaves
        assert (run_dir / "eval" / f"purity_{mode}.png").is_file()
    assert "| path | generation" in (run_dir / "eval" / "report.md").read_text()
    assert "eval/path/generation/fid32" in tags(run_dir / "tb" / "eval").Tags()["scalars"]
