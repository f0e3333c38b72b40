"""End-to-end runs of `treediff grow` through the real command path (Hydra compose -> trainer)."""
import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from growth_helpers import NO_FLOORS
from jobs.cli import JobError, run_job
from treediff.checkpoint import load_checkpoint
from treediff.vae.trainer import final_checkpoint, load_tree_model

QUICK = ["cluster=inprocess", "optim.epochs_initial=6", "optim.epochs_subtree=4", "optim.epochs_finetune=2", "optim.batch_size=64",
         "growth.num_clusters_tree=5", *NO_FLOORS]


def phases(run_dir):
    return sorted(p.name for p in (run_dir / "tree").iterdir() if p.name.startswith("phase-"))


def test_grow_digits_end_to_end(run_dir):
    report = run_job("grow", [f"run_dir={run_dir}"] + QUICK)
    names = phases(run_dir)
    assert names[0] == "phase-000-initial" and names[-2].endswith("-prune") and names[-1].endswith("-finetune")
    splits = [n for n in names if "-subtree-" in n]
    assert len(splits) >= 2
    log = [json.loads(l) for l in (run_dir / "tree" / "growth_log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in log if r["kind"] == "split"] and all("counts" in r for r in log if r["kind"] == "split")
    # each subtree phase split the leaf the log names, and the checkpoint holds that tree
    for name, rec in zip(splits, [r for r in log if r["kind"] == "split"]):
        ckpt = load_checkpoint(run_dir / "tree" / name)
        assert int(name.rsplit("-", 1)[1]) == rec["leaf"]
        assert 2 * rec["leaf"] + 1 in ckpt.tree.nodes
        assert ckpt.config["data"]["name"] == "digits"
    metrics = json.loads((run_dir / "metrics.json").read_text())["tree"]
    assert metrics["nmi"] == pytest.approx(report["nmi"]) and metrics["acc"] == pytest.approx(report["acc"])
    assert 0.2 < metrics["nmi"] <= 1 and 0.15 < metrics["acc"] <= 1  # well above chance (NMI ~0, ACC ~0.1)
    assert sum(metrics["leaf_sizes"].values()) == 360
    model = load_tree_model(final_checkpoint(run_dir))
    assert model.tree.leaves == metrics["leaves"]
    # TensorBoard: the leaf sizes behind every split decision, at the phase it followed
    tb = EventAccumulator(str(run_dir / "tb" / "driver"), size_guidance={"scalars": 0})
    tb.Reload()
    first = log[0]["counts"]  # the initial tree's two leaves, after phase 0
    for leaf, n in first.items():
        assert tb.Scalars(f"tree/leaf_size/{leaf}")[0].value == n and tb.Scalars(f"tree/leaf_size/{leaf}")[0].step == 0


def test_resume_skips_complete_phases(run_dir):
    run_job("grow", [f"run_dir={run_dir}", "growth.max_phases=1"] + QUICK)
    first = run_dir / "tree" / "phase-000-initial"
    stamp = first.stat().st_mtime_ns, (first / "model.pt").read_bytes()
    # simulate a driver killed between phases: drop the last two phases, then re-run with more phases
    for name in phases(run_dir)[-2:]:
        import shutil
        shutil.rmtree(run_dir / "tree" / name)
    assert phases(run_dir)[-1] == "phase-001-subtree-" + phases(run_dir)[-1].rsplit("-", 1)[1]
    run_job("grow", [f"run_dir={run_dir}", "growth.max_phases=3"] + QUICK)
    assert (first.stat().st_mtime_ns, (first / "model.pt").read_bytes()) == stamp  # not re-run
    names = phases(run_dir)
    assert names[1].startswith("phase-001-subtree") and names[-1].endswith("finetune")
    assert len([n for n in names if "subtree" in n]) >= 2


def test_fashion_mnist_trains_through_the_same_path(run_dir):
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
        if os.environ.get("CI") == "true":
            pytest.fail("dataset-fashion-mnist is missing in CI")
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    # the reference's Fashion-MNIST schedule (KL annealing from 0.5), shortened
    report = run_job("grow", [f"run_dir={run_dir}", "cluster=inprocess", "data=fashion_mnist", "model=tree_mnist", "optim=fashion_mnist",
                              "data.limit_train=2048", "data.limit_test=512", "optim.epochs_initial=4",
                              "optim.epochs_subtree=2", "optim.epochs_finetune=1", "optim.batch_size=128",
                              "growth.num_clusters_tree=3"])
    assert report["n"] == 512 and any("-subtree-" in p.name for p in (run_dir / "tree").iterdir())
    assert len(report["leaves"]) >= 2
    assert 0.1 < report["nmi"] <= 1.0  # chance is ~0; three leaves of ten classes cap it well below 1


@pytest.mark.parametrize("override, message", [
    ("data.name=cifar100", "unknown data set 'cifar100'"),
    ("data=mnist", "data.root"),
    ("model=tree_mnist", "model.image_size=28"),
    ("optim.epochs_initial=-3", "optim.epochs_initial"),
    ("model.encoder=vgg", "model.encoder"),
    ("model.nope=1", "model.nope"),
])
def test_bad_input_names_the_culprit(run_dir, override, message):
    with pytest.raises((JobError, ValueError, FileNotFoundError), match=message):
        run_job("grow", [f"run_dir={run_dir}", "cluster=inprocess", override])


def test_cli_reports_errors_in_one_line(run_dir):
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "grow", f"run_dir={run_dir}", "data=mnist",
                           "data.root=/no/such/mnist"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "treediff grow: error:" in proc.stderr and "/no/such/mnist" in proc.stderr
    assert "Traceback" not in proc.stderr
