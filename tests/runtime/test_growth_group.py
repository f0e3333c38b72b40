"""Tree growth on one Ray Train worker group (cluster.growth): a worker killed in the middle of a
subtree phase, the group restarted by Ray Train, the phase continued from its last checkpoint;
the split rule's leaf counts gathered exactly from the ranks."""
import json
import os
import re
import signal
import threading
import time

import numpy as np
import torch

from cluster.config import TrainerConfig
from cluster.growth import RUN_NAME, grow_on_ray
from treediff.data.shards import ShardSet
from treediff.data.stream import StreamConfig, make_loader
from treediff.vae import GrowthConfig, OptimConfig
from treediff.vae.trainer import load_tree_model

from runtime_helpers import TREE


def registered(run: "os.PathLike") -> list[dict]:
    """The progress of every checkpoint the Ray Train controller has registered for `run`."""
    try:
        names = set(re.findall(r"checkpoint_[0-9_.-]+", (run / "checkpoint_manager_snapshot.json").read_text()))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append(json.loads((run / name / "progress.json").read_text()))
        except (OSError, ValueError):
            pass
    return out


def test_killed_worker_continues_its_phase_from_the_last_checkpoint(local_ray, digit_shards, tmp_path):
    run_dir = tmp_path / "run"
    trainer = TrainerConfig(num_workers=2, storage_path=str(run_dir / "ray"), max_failures=1, checkpoint_every=1,
                            zero_stage=0)
    optim = OptimConfig(batch_size=64, kl_start=0.1, epochs_initial=2, epochs_subtree=12, epochs_finetune=1)
    growth = GrowthConfig(num_clusters_tree=3, max_phases=1, max_depth=4)
    killed = {}

    def killer():
        deadline = time.time() + 400
        while time.time() < deadline:
            initial = run_dir / "tree" / "phase-000-initial" / "meta.json"
            # mid-phase 1, once the controller has registered a checkpoint of it
            if initial.is_file() and any(p.get("phase") == 1 and p["epoch"] >= 1 for p in registered(run_dir / "ray" / RUN_NAME)):
                group = json.loads(initial.read_text())["worker_group"]
                killed["pid"] = int(group[1].rsplit(":", 1)[1])
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    model = grow_on_ray(TREE, growth, optim, trainer, digit_shards, run_dir, {"model": vars(TREE)}, local=True)
    thread.join(timeout=5)
    assert killed, "the worker was never killed (the phase ended first)"
    phases = sorted(p.name for p in (run_dir / "tree").iterdir() if p.name.startswith("phase-"))
    assert phases[0] == "phase-000-initial" and phases[1].startswith("phase-001-subtree") and phases[-1].endswith("finetune")
    metas = [json.loads((run_dir / "tree" / p / "meta.json").read_text()) for p in phases]
    assert f":{killed['pid']}" in metas[0]["worker_group"][1]
    # the restarted group (new processes) continued phase 1 after its checkpoint, not from epoch 0,
    # and grew the rest of the tree itself
    assert metas[1]["resumed_from_epoch"] is not None and 1 <= metas[1]["resumed_from_epoch"] < 11
    assert metas[1]["worker_group"] != metas[0]["worker_group"]
    assert metas[-1]["worker_group"] == metas[1]["worker_group"]
    assert model.tree.leaves == load_tree_model(run_dir / "tree" / phases[-1]).tree.leaves
    # the split rule's counts, gathered from both ranks, are the one-process P(leaf | x), row for row
    log = [json.loads(line) for line in (run_dir / "tree" / "growth_log.jsonl").read_text().splitlines()]
    initial = load_tree_model(run_dir / "tree" / "phase-000-initial")
    shards = ShardSet.open(digit_shards)
    probs = []
    with torch.no_grad():
        for x, _, _ in make_loader(shards, "train", StreamConfig(batch_size=512, shuffle_buffer=0)):
            probs.append(initial.leaf_probs(x).numpy())
    probs = np.concatenate(probs)
    assert len(probs) == shards.count("train")
    thr = log[0]["threshold"]
    assert log[0]["counts"] == {str(leaf): int((probs[:, k] >= thr).sum()) for k, leaf in enumerate(initial.tree.leaves)}


def test_linear_scaling_gives_each_phase_the_images_of_one_process(local_ray, digit_shards, tmp_path):
    """trainer.batch_scaling=linear (trainer=cpu): each of 2 workers steps on the configured batch of
    32 (global 64, lr x2), and a phase's step floor counts steps of 32, so every phase trains the
    epochs one process would give it, and a leaf still needs 32 samples to be split."""
    from treediff.vae.budget import at_global_batch, phase_epochs

    run_dir = tmp_path / "run"
    trainer = TrainerConfig(num_workers=2, storage_path=str(run_dir / "ray"), zero_stage=0, batch_scaling="linear")
    optim = OptimConfig(batch_size=32, epochs_initial=1, epochs_subtree=1, min_steps_subtree=120, epochs_finetune=0)
    grow_on_ray(TREE, GrowthConfig(num_clusters_tree=3, max_phases=2, max_depth=4), optim, trainer, digit_shards, run_dir,
                {"model": vars(TREE)}, local=True)
    metas = {p.name: json.loads((p / "meta.json").read_text()) for p in sorted((run_dir / "tree").glob("phase-*"))}
    (name, subtree), = [(k, m) for k, m in metas.items() if "subtree" in k]
    n = subtree["subset"]
    assert n >= 32 and subtree["workers"] == 2
    # 2 workers of 32: ceil(60 / (n // 64)) epochs; one process: ceil(120 / (n // 32)), the same up to
    # the rounding of n // 64 (a floor of 120 steps of 64 would double them)
    assert subtree["epochs"] == phase_epochs(at_global_batch(optim, 64, 2.0), "subtree", n), (name, n)
    assert abs(subtree["epochs"] - phase_epochs(optim, "subtree", n)) <= 1 < subtree["epochs"], (name, n, subtree)
    assert metas["phase-000-initial"]["epochs"] == 1
