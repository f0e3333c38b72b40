"""The Ray Train + DeepSpeed loop on a local Ray cluster (127.0.0.1, 2 CPUs): agreement with a
plain loop, loopback-only listeners, NaN handling, and recovery from a killed worker."""
import json
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cluster.config import TrainerConfig
from cluster.loop import StageData, StageFailed, fit_stage, plain_steps, stop_file
from treediff.checkpoint import save_checkpoint
from treediff.diffusion.config import DiffusionConfig
from treediff.stages import DiffusionStage, TreePhaseStage
from treediff.vae import TreeVAE

from runtime_helpers import LOOPBACK, TREE, descendants, initial_stage, listeners_of, register_by_value

register_by_value(__name__)


class ProbeStage(TreePhaseStage):
    """Records, at its first step, this worker's pid and the host's listening sockets."""

    def __init__(self, *args, probe_dir: str, **kw):
        super().__init__(*args, **kw)
        self.probe_dir, self.probed = probe_dir, False

    def loss(self, forward, batch):
        if not self.probed:
            import subprocess
            self.probed = True
            out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
            Path(self.probe_dir, f"ss-{os.getpid()}.txt").write_text(out)
            procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            Path(self.probe_dir, f"ps-{os.getpid()}.txt").write_text(procs)
        return super().loss(forward, batch)


class NaNAtEpoch2(TreePhaseStage):
    """A NaN loss from epoch 2 on; logs `pid epoch` at every epoch start."""

    def __init__(self, *args, log_path: str, **kw):
        super().__init__(*args, **kw)
        self.log_path = log_path

    def begin_epoch(self, model, epoch):
        self.epoch = epoch
        with open(self.log_path, "a") as f:
            f.write(f"{os.getpid()} {epoch}\n")
        return super().begin_epoch(model, epoch)

    def loss(self, forward, batch):
        loss, logs = super().loss(forward, batch)
        return (loss * float("nan"), logs) if self.epoch >= 2 else (loss, logs)


class SlowLoggedStage(TreePhaseStage):
    """Logs `pid epoch` at every epoch start and sleeps a little per step (time to kill a worker)."""

    def __init__(self, *args, log_path: str, **kw):
        super().__init__(*args, **kw)
        self.log_path = log_path

    def begin_epoch(self, model, epoch):
        with open(self.log_path, "a") as f:
            f.write(f"{os.getpid()} {epoch}\n")
        return super().begin_epoch(model, epoch)

    def loss(self, forward, batch):
        time.sleep(0.1)  # an epoch of 22 steps takes > 2 s
        return super().loss(forward, batch)


def trainer(tmp_path, **kw):
    return TrainerConfig(**{"num_workers": 2, "storage_path": str(tmp_path / "ray"), "max_failures": 0,
                            "checkpoint_every": 1, **kw})


def test_one_worker_matches_the_plain_loop(local_ray, digit_shards, tmp_path):
    data = StageData(digit_shards, global_batch=64, seed=5)
    plain = plain_steps(initial_stage(), data, steps=20, trainer=trainer(tmp_path, num_workers=1))
    _, metrics = fit_stage(initial_stage(), data, trainer(tmp_path, num_workers=1), name="eq", local=True,
                           record_losses=True)
    ray_losses = metrics["step_losses"][:20]
    assert len(plain) == len(ray_losses) == 20
    assert plain[0] != plain[-1]
    assert ray_losses == pytest.approx(plain, rel=1e-4, abs=1e-4)


def test_two_workers_zero1_train_and_listen_on_loopback_only(local_ray, digit_shards, tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    stage = initial_stage(epochs=3, cls=ProbeStage, probe_dir=str(probe))
    export, metrics = fit_stage(stage, StageData(digit_shards, global_batch=64), trainer(tmp_path, zero_stage=1),
                                name="two", local=True, tb_dir=str(tmp_path / "tb"))
    assert metrics["epoch"] == 2 and len(metrics["loss_history"]) == 3
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]
    assert set(export["model"]) == set(stage.init_state)
    # the workers' own sockets (gloo included) and every Ray process of this session
    files = sorted(probe.glob("ss-*.txt"))
    assert len(files) == 2
    worker_pids = [int(f.stem.split("-")[1]) for f in files]
    seen = []
    for f, pid in zip(files, worker_pids):
        for line in f.read_text().splitlines():
            if f"pid={pid}," in line:
                seen.append(line.split()[3].rsplit(":", 1)[0])
    seen += [addr for addr, _ in listeners_of(descendants())]
    assert seen and all(addr in LOOPBACK for addr in seen), seen
    # while the run trains, none of Ray Train's helpers that cannot work on a local cluster: the
    # placement-group cleaner (it polls the State API, which needs the dashboard, and the run's end
    # waited 12 s for it: cluster/trainer.py) and the preemption watcher (no node is drained here)
    actors = [line for line in (probe / f"ps-{worker_pids[0]}.txt").read_text().splitlines() if line.startswith("ray::")]
    assert any("RayTrainWorker" in a for a in actors) and any("TrainController" in a for a in actors), actors
    assert not any("PlacementGroupCleaner" in a or "PreemptionWatcher" in a for a in actors), actors
    # DeepSpeed built no JIT op (it would land in the environment's TORCH_EXTENSIONS_DIR)
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        assert not list((Path(sys.prefix) / "torch_extensions").rglob("*shm_comm*"))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(local_ray, digit_shards, tmp_path):
    log = tmp_path / "epochs.log"
    stage = initial_stage(epochs=4, cls=NaNAtEpoch2, log_path=str(log))
    # max_failures=1 as in trainer=cpu: Ray Train restarts the workers, which stop at once
    with pytest.raises(StageFailed, match=r"loss is nan at epoch 2.*last good checkpoint"):
        fit_stage(stage, StageData(digit_shards, global_batch=64), trainer(tmp_path, max_failures=1), name="nan",
                  local=True)
    kept = [json.loads(p.read_text())["epoch"] for p in (tmp_path / "ray" / "nan").glob("checkpoint_*/progress.json")]
    assert max(kept) == 1  # epochs 0 and 1 were checkpointed and are still there
    begun = sorted(int(line.split()[1]) for line in log.read_text().splitlines())
    assert begun == [0, 0, 1, 1, 2, 2]  # two ranks, each epoch once: the restart replayed nothing
    assert "loss is nan" in stop_file(tmp_path / "ray", "nan").read_text()


def test_bf16_precision_runs_the_diffusion_stage(local_ray, digit_shards, tmp_path):
    # what trainer=gpu runs (DeepSpeed bf16 weights, autocast), on the CPU: fp32 batches, noise and frozen tree
    tree = tmp_path / "tree"
    model = TreeVAE(TREE)
    model.split(2)
    save_checkpoint(tree, model.state_dict(), model.tree, {"model": vars(TREE)}, {})
    cfg = DiffusionConfig(T=100, model_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4],
                          num_heads=2, dropout=0.0, warmup_steps=2, cond_drop_prob=0.2)
    export, metrics = fit_stage(DiffusionStage(cfg, str(tree), epochs=2), StageData(digit_shards, global_batch=64),
                                trainer(tmp_path, num_workers=1, precision="bf16"), name="bf16", local=True)
    assert all(math.isfinite(v) for v in metrics["loss_history"]) and metrics["loss_history"][-1] < 1.0
    assert {v.device.type for v in export["model"].values()} == {"cpu"}
    # the hand-off is fp32 (DeepSpeed's torch_autocast keeps fp32 weights): not bf16 weights upcast
    assert {v.dtype for v in export["model"].values() if v.is_floating_point()} == {torch.float32}
    trained = [v for k, v in export["model"].items() if k.endswith("weight") and v.numel() > 100]
    assert trained and any(not torch.equal(v, v.bfloat16().float()) for v in trained)
    assert {v.dtype for v in export["ema"]["shadow"].values()} == {torch.float32}  # the average stays fp32


def test_bf16_precision_runs_a_tree_phase_with_batchnorm(local_ray, digit_shards, tmp_path):
    # BatchNorm is not autocast: with bf16 weights (DeepSpeed's bf16 mode) an fp32 activation met
    # bf16 BatchNorm weights and the TreeVAE stage failed; torch_autocast keeps the weights fp32
    stage = initial_stage(epochs=2)
    export, metrics = fit_stage(stage, StageData(digit_shards, global_batch=64), trainer(tmp_path, num_workers=1,
                                precision="bf16"), name="bf16-tree", local=True)
    assert all(math.isfinite(v) for v in metrics["loss_history"])
    assert {v.dtype for v in export["model"].values() if v.is_floating_point()} == {torch.float32}


def test_a_binding_gradient_clip_gives_the_plain_loops_losses(local_ray, digit_shards, tmp_path):
    # diffusion.grad_clip (not trainer.grad_clip, 0) clips on the Ray path as in one process
    tree = tmp_path / "tree"
    model = TreeVAE(TREE)
    save_checkpoint(tree, model.state_dict(), model.tree, {"model": vars(TREE)}, {})

    def stage(clip):
        cfg = DiffusionConfig(T=100, model_channels=16, channel_mult=[1, 2], num_res_blocks=1,
                              attention_resolutions=[4], num_heads=2, dropout=0.0, warmup_steps=0, lr=1e-2,
                              grad_clip=clip)
        return DiffusionStage(cfg, str(tree), epochs=1)
    data = StageData(digit_shards, global_batch=64, seed=3)
    clipped = plain_steps(stage(1e-3), data, steps=12, trainer=trainer(tmp_path, num_workers=1))
    unclipped = plain_steps(stage(0.0), data, steps=12, trainer=trainer(tmp_path, num_workers=1))
    assert abs(clipped[-1] - unclipped[-1]) > 1e-3  # the clip binds: it changes the trajectory
    _, metrics = fit_stage(stage(1e-3), data, trainer(tmp_path, num_workers=1), name="clip", local=True,
                           record_losses=True)
    assert metrics["step_losses"][:12] == pytest.approx(clipped, rel=1e-4, abs=1e-5)


def test_killed_worker_restarts_from_the_last_checkpoint(local_ray, digit_shards, tmp_path):
    log = tmp_path / "epochs.log"
    stage = initial_stage(epochs=5, cls=SlowLoggedStage, log_path=str(log))
    killed = {}

    run_dir = tmp_path / "ray" / "kill"

    def registered_epochs():
        """Epochs whose checkpoints the controller has registered (listed in its snapshot file)."""
        snapshot = run_dir / "checkpoint_manager_snapshot.json"
        try:
            names = set(re.findall(r"checkpoint_[0-9_.-]+", snapshot.read_text()))
        except (FileNotFoundError, OSError):
            return set()
        epochs = set()
        for name in names:
            try:
                epochs.add(json.loads((run_dir / name / "progress.json").read_text())["epoch"])
            except (FileNotFoundError, ValueError, KeyError):
                pass
        return epochs

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline:
            lines = log.read_text().split("\n") if log.exists() else []
            begun = [tuple(map(int, l.split())) for l in lines if l]
            at_two = [pid for pid, epoch in begun if epoch == 2]
            # kill mid-epoch 2, once the controller has registered epoch 1's checkpoint
            if at_two and 1 in registered_epochs():
                killed["pid"], killed["epoch"] = at_two[0], 2
                os.kill(at_two[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    export, metrics = fit_stage(stage, StageData(digit_shards, global_batch=64), trainer(tmp_path, max_failures=1),
                                name="kill", local=True)
    thread.join(timeout=5)
    assert killed, "the worker was never killed"
    assert metrics["epoch"] == 4 and export["model"]
    begun = [tuple(map(int, l.split())) for l in log.read_text().split("\n") if l]
    first_pids = {pid for pid, epoch in begun if epoch == 0}
    restarted = [epoch for pid, epoch in begun if pid not in first_pids]
    assert restarted, "no worker was restarted"
    # the new workers resume after the last checkpoint (epoch 1, or 2 if it was saved before the kill
    # landed): nothing before it is redone, at most the interrupted epoch is
    assert min(restarted) in (2, 3) and max(restarted) == 4
    assert sorted(set(restarted)) == list(range(min(restarted), 5))
