"""The quick presets run end to end through the command a full preset uses (`treediff pipeline
experiment=<name>`): grow, both diffusion modes, evaluation; MNIST-format and CIFAR-format data."""
import json
import os
import pickle

import pytest
import numpy as np
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jobs.cli import main
from treediff.data.bundled import load_photo_patches

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


# digits_quick runs end to end in tests/e2e (the pipeline the e2e tests share is that preset)


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
    # a one-epoch classifier on 2,048 images is far from 0.9 accuracy: the report says its purities are rough
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert any("classifier's test accuracy" in line for line in report["caveats"]), report["caveats"]
    assert "Caveats:" in (tmp_path / "run" / "eval" / "report.md").read_text()


def write_cifar_from_photos(root, per_batch: int, n_test: int):
    """cifar-10-batches-py (protocol-2 pickles of {b"data": rows R|G|B, b"labels": [...]}, and
    batches.meta) holding real colour pixels: the bundled photo crops, 8 of the 10 class ids."""
    root.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    for split, files, n in (("train", [f"data_batch_{i}" for i in range(1, 6)], per_batch), ("test", ["test_batch"], n_test)):
        crops = load_photo_patches(split)
        pick = np.random.default_rng(0).permutation(len(crops.labels))[:n * len(files)]
        for i, name in enumerate(files):
            rows = pick[i * n:(i + 1) * n]
            data = crops.images[rows].transpose(0, 3, 1, 2).reshape(n, -1)  # (N, 3072): red, green, blue planes
            batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in crops.labels[rows]], b"data": data}
            (root / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_quick_runs_end_to_end_with_the_contrastive_term(tmp_path):
    # CIFAR-10's on-disk format written from real colour crops (no CIFAR-10 ships here): the tree
    # with the contrastive term on two augmented views, both diffusion modes, evaluation
    root = tmp_path / "cifar-10-batches-py"
    write_cifar_from_photos(root, per_batch=160, n_test=200)  # fewer images and the 4-epoch tree collapses to one leaf
    config = check_run(pipeline("cifar10_quick", tmp_path, f"data.root={root}", "diffusion.steps=20",
                               "diffusion.log_every=10", "eval.classifier_epochs=1"), leaves_at_most=4)
    assert config["data"]["name"] == "cifar10" and config["model"]["encoder"] == "cnn2"
    assert config["model"]["contrastive"] is True and config["model"]["contrastive_weight"] == 100.0
    events = EventAccumulator(str(tmp_path / "run" / "tb" / "driver"), size_guidance={"scalars": 0})
    events.Reload()
    for phase in ("initial", "finetune"):  # the term was added in the training phases, and is finite
        values = [s.value for s in events.Scalars(f"tree/{phase}/contrastive")]
        assert values and all(np.isfinite(values)) and min(values) > 0
