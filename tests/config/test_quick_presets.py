"""The quick presets of MNIST-format data run end to end through the command a full preset uses
(`treediff pipeline experiment=<name>`): grow, both diffusion modes, evaluation."""
import json
import os

import pytest
import yaml

from jobs.cli import main

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def pipeline(preset: str, tmp_path, *extra: str) -> dict:
    run_dir = tmp_path / "run"
    code = main(["pipeline", f"experiment={preset}", "cluster=inprocess", f"run_dir={run_dir}",
                 f"eval.cache_dir={tmp_path / 'fid'}", *extra])
    assert code == 0
    return run_dir


def check_run(run_dir, leaves_at_most: int) -> dict:
    phases = sorted(p.name for p in (run_dir / "tree").glob("phase-*"))
    assert phases[0] == "phase-000-initial" and phases[-1].endswith("-finetune")
    assert any("-subtree-" in p for p in phases)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    leaves = metrics["tree"]["leaves"]
    assert 2 <= len(leaves) <= leaves_at_most
    for mode in ("path", "recon"):
        assert (run_dir / "diffusion" / mode / "ema.pt").is_file()
        assert (run_dir / "samples" / f"{mode}_leaves.png").is_file()
        assert metrics["diffusion"][mode]["loss_end"] < metrics["diffusion"][mode]["loss_start"]
        assert metrics["eval"][mode]["generation"]["fid"] > 0
    assert (run_dir / "eval" / "report.md").is_file()
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_digits_quick_runs_end_to_end(tmp_path):
    config = check_run(pipeline("digits_quick", tmp_path), leaves_at_most=4)
    assert config["model"]["image_size"] == 8 and config["eval"]["extractor"] == "pixels"


def test_fashion_mnist_quick_runs_end_to_end(tmp_path):
    if not os.path.exists(FASHION):
        if os.environ.get("CI") == "true":
            pytest.fail("dataset-fashion-mnist is missing in CI")
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    # shorter diffusion and classifier than the preset, to keep the test near a minute on one core
    config = check_run(pipeline("fashion_mnist_quick", tmp_path, "diffusion.steps=20", "diffusion.log_every=10",
                               "eval.classifier_epochs=1"), leaves_at_most=4)
    assert config["data"] == {"name": "fashion_mnist", "root": "/usr/share/datasets/fashion-mnist",
                              "limit_train": 2048, "limit_test": 512, "image_size": 0, "channels": 0}
    assert (config["model"]["encoder"], config["model"]["image_size"], config["model"]["latent_channels"]) == (
        "cnn1", 28, 16)  # the reference architecture at full size
    assert config["diffusion"]["pad_to"] == 32 and config["growth"]["intermediate_fulltrain_every"] == 3
