"""Tree growth on Ray: one Ray Train worker group grows the whole tree.

The driver starts one TorchTrainer run (named `tree`) for the whole growth. Each of its
workers runs the same `treediff.vae.trainer.GrowthRun` (the growth rules, the decision log, the
phase checkpoints) with a `WorkerGroupExecutor`: every phase trains on the group's DeepSpeed
engines over the shards, and P(leaf | x) for the split rule is counted on the same workers
(each rank an exact pass over its own shards, gathered exactly). Worker start-up, the process
group and the shard set's hash are paid once per growth, not once per phase.

Every rank takes the same decisions: after a phase, rank 0's weights (its BatchNorm statistics
included) are broadcast, and every rank gets the same gathered probabilities, so the split rule
(a pure function of them) agrees everywhere. Only rank 0 writes: the phase checkpoints, the
growth log, TensorBoard.

Recovery: a re-run resumes after the last complete phase on disk (as in one process). Within a
phase, the checkpoints reported to Ray Train carry the phase index and name; a restarted worker
group (after a worker failure) or a re-run after a killed driver (the same run name, so Ray
Train hands back its latest checkpoint) continues that phase at the epoch after its last
checkpoint.
"""
from __future__ import annotations

import copy
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from treediff.data.shards import ShardSet
from treediff.data.stream import StreamConfig, make_loader
from treediff.stages import TreePhaseStage
from treediff.vae.budget import at_global_batch
from treediff.vae.config import GrowthConfig, OptimConfig, TreeVAEConfig
from treediff.vae.model import TreeVAE
from treediff.vae.trainer import GrowthRun, final_checkpoint, load_tree_model

from .config import TrainerConfig
from .loop import StageData, Worker, fit_loop, read_progress, run_stage, split_cache

RUN_NAME = "tree"  # the Ray Train run of the whole growth, under trainer.storage_path
COUNT_BATCH = 512


class Superseded(RuntimeError):
    """A newer run of this growth owns the run directory: this (orphaned) worker group stops."""


def owner_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tree" / ".owner"


class WorkerGroupExecutor:
    """The GrowthRun executor of one Ray Train worker (every rank of the group runs one)."""

    def __init__(self, worker: Worker, model_cfg: TreeVAEConfig, optim: OptimConfig, shards: ShardSet,
                 tb=None, resume=None, owner: tuple[str, str] | None = None):
        import torch.distributed as dist

        self.worker, self.model_cfg, self.optim, self.shards, self.tb = worker, model_cfg, optim, shards, tb
        self.keys: list[str] | None = None  # the training samples, in leaf_probs' row order
        self.cache = split_cache(shards, "train", worker.trainer)  # decoded once per growth (if it fits)
        self.verified = self.cache is not None  # reading the cache checked the shards' sha256
        self.count_seconds = 0.0
        self.resume = resume  # a checkpoint Ray Train handed back (worker restart, driver re-run)
        self.resume_tag = read_progress(resume) if resume is not None else None
        self.owner = owner  # (owner file, the token the driver wrote there)
        pids: list[Any] = [None] * worker.world
        dist.all_gather_object(pids, f"{os.uname().nodename}:{os.getpid()}")
        # written into every phase checkpoint: the exact data the tree was grown on, and the group
        self.checkpoint_meta = {"data_manifest_sha256": shards.digest(), "runtime": "ray",
                                "workers": worker.world, "worker_group": pids, "ray_train_run": RUN_NAME}

    @property
    def num_samples(self) -> int:
        return len(self.cache) if self.cache is not None else self.shards.count("train")

    def train(self, model: TreeVAE, *, subtree: int | None, epochs: int, desc: str,
              subset: np.ndarray | None = None, phase: int = 0, kl_decay: float | None = None) -> dict[str, Any] | None:
        import torch.distributed as dist

        resume, tag = self.resume, {"phase": phase, "desc": desc}
        self.resume = None  # only the first phase trained after a (re)start can continue a checkpoint
        if epochs == 0:
            return None
        if resume is not None and {k: self.resume_tag.get(k) for k in tag} != tag:
            resume = None  # the checkpoint is of a phase already complete on disk
        keys = None
        if subset is not None:
            if self.keys is None or len(self.keys) != len(subset):
                raise RuntimeError("WorkerGroupExecutor.train: a subset needs the keys of the last leaf_probs call")
            keys = frozenset(k for k, keep in zip(self.keys, subset) if keep)
        stage = TreePhaseStage(self.model_cfg, model.tree.to_json(), {k: v.cpu() for k, v in model.state_dict().items()},
                               subtree, self.optim if kl_decay is None else replace(self.optim, kl_decay=kl_decay),
                               epochs=epochs, name=f"tree/{desc}")
        data = StageData(self.shards.root, global_batch=self._batch(keys), keys=keys, seed=self.optim.seed + phase)
        timing: dict[str, Any] = {}
        export, metrics = run_stage(stage, data, self.worker, self.shards, resume=resume, tb=self.tb, tag=tag,
                                    verify=not self.verified, timing=timing, cache=self.cache, final_report=False)
        self.verified = True  # the shards' sha256 once per worker process
        state = [export["model"]]
        dist.broadcast_object_list(state, src=0)  # rank 0's weights and BatchNorm statistics, everywhere
        model.load_state_dict(state[0], strict=True)
        model.set_trainable(None)
        model.eval()
        return {"step_seconds": sum(timing["epochs"]), "setup_seconds": timing["setup"],
                "save_seconds": timing["saves"], "count_seconds": self.count_seconds,
                "trained_at": time.time(), "epochs": epochs,
                "resumed_from_epoch": (self.resume_tag or {}).get("epoch") if resume is not None else None,
                "loss": metrics.get("loss")}

    def fence(self) -> None:
        """Rank 0 writes only while its driver's token is in the owner file: a worker group
        orphaned by a killed driver (Ray takes a few seconds to reap it) never writes a phase
        beside the re-run's."""
        if self.owner is not None:
            path, token = self.owner
            try:
                current = Path(path).read_text()
            except OSError:
                current = None
            if current != token:
                raise Superseded(f"a newer run of this growth owns {Path(path).parent}: this worker group stops")

    def _batch(self, keys: frozenset | None) -> int:
        """The global batch: optim.batch_size, shrunk for a small subset, kept divisible by the workers
        (and by the views)."""
        views = self.model_cfg.views  # the batch counts samples: images x views
        step = self.worker.world * self.worker.trainer.grad_accum * views
        batch = self.optim.batch_size if keys is None else min(self.optim.batch_size, max(step, len(keys) * views))
        return max(step, batch - batch % step)

    @torch.no_grad()
    def leaf_probs(self, model: TreeVAE) -> np.ndarray:
        """P(leaf | x) of every training sample: each rank reads its own shards once (exact mode),
        the rows are gathered on every rank and put in key order (the same on every rank)."""
        import torch.distributed as dist

        t0 = time.perf_counter()
        w = self.worker
        device = torch.device("cuda", torch.cuda.current_device()) if w.on_gpu else torch.device("cpu")
        counter = copy.deepcopy(model).to(device).eval()
        keys, probs = [], []
        if self.cache is not None:  # this rank's rows of the split in memory
            rows = np.arange(w.rank, len(self.cache), w.world)
            loader = ((self.cache.images[torch.from_numpy(rows[i:i + COUNT_BATCH])].float().div(127.5).sub(1.0), None,
                       [self.cache.keys[j] for j in rows[i:i + COUNT_BATCH]]) for i in range(0, len(rows), COUNT_BATCH))
        else:
            loader = make_loader(self.shards, "train", StreamConfig(
                batch_size=COUNT_BATCH, rank=w.rank, world_size=w.world, shuffle_buffer=0, verify=False))
        for x, _, k in loader:
            probs.append(counter.leaf_probs(x.to(device)).float().cpu().numpy())
            keys += list(k)
        mine = (keys, np.concatenate(probs) if probs else np.zeros((0, len(model.tree.leaves)), np.float32))
        parts: list[Any] = [None] * w.world
        dist.all_gather_object(parts, mine)
        all_keys = [k for part_keys, _ in parts for k in part_keys]
        all_probs = np.concatenate([p for _, p in parts])
        order = np.argsort(all_keys, kind="stable")  # a fixed order, whatever the number of ranks
        self.keys = [all_keys[i] for i in order]
        self.count_seconds = time.perf_counter() - t0  # recorded with the next phase
        return all_probs[order]


def growth_loop_per_worker(config: dict[str, Any]) -> None:
    """One worker of the growth run: the whole GrowthRun, every phase on this worker group."""
    import ray.train

    worker = Worker.current(config["trainer"])
    shards = ShardSet.open(config["shards"])
    writer = worker.rank == 0
    tb = log = None
    if writer:
        from .tensorboard import TBLogger
        tb = TBLogger(config["tb_dir"])
        log = config["make_log"]() if config.get("make_log") else None
    try:
        executor = WorkerGroupExecutor(worker, config["model_cfg"], config["optim"], shards, tb=tb,
                                       resume=ray.train.get_checkpoint(), owner=config["owner"])
        GrowthRun(config["model_cfg"], config["growth"], config["optim"], None, config["run_dir"], config["config"],
                  log=log, executor=executor, writer=writer).run()
    finally:
        if tb is not None:
            tb.close()


def grow_on_ray(model_cfg: TreeVAEConfig, growth: GrowthConfig, optim: OptimConfig, trainer: TrainerConfig,
                shards: str | Path, run_dir: str | Path, config: dict[str, Any], *, local: bool,
                make_log: Callable[[], Callable[[str, dict[str, Any]], None]] | None = None) -> TreeVAE:
    """Grow (or resume growing) the tree on one Ray Train worker group; returns the final tree.

    `make_log`: a picklable factory of the growth logger rank 0 uses (console, TensorBoard).
    """
    from .scaling import plan

    GrowthRun.check(model_cfg, growth)
    sized = plan(trainer, optim.batch_size, "tree growth", "optim.batch_size")
    if sized.note:
        print(f"[grow] {sized.note}", flush=True)
    if sized.global_batch != optim.batch_size:
        print(f"[grow] trainer.batch_scaling={trainer.batch_scaling}: {sized.workers} workers of "
              f"{sized.global_batch // sized.workers} images (global batch {sized.global_batch}), learning rate "
              f"x{sized.lr_scale:g}, step floors counted at optim.batch_size={optim.batch_size}", flush=True)
    # a leaf must fill one configured batch to be split, whatever the workers (growth.min_samples=0)
    growth = replace(growth, min_samples=growth.min_samples or optim.batch_size)
    optim = at_global_batch(optim, sized.global_batch, sized.lr_scale)
    trainer = sized.trainer(trainer)
    run_dir = Path(run_dir).resolve()
    owner = owner_file(run_dir)
    owner.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    owner.write_text(token)  # this driver's run owns the growth now (WorkerGroupExecutor.fence)
    config_ = {"owner": (str(owner), token), "model_cfg": model_cfg, "growth": growth, "optim": optim, "trainer": trainer,
               "shards": str(Path(shards).resolve()), "run_dir": str(run_dir), "config": config,
               "tb_dir": str(run_dir / "tb" / "tree"), "make_log": make_log}
    fit_loop(growth_loop_per_worker, config_, trainer, name=RUN_NAME, local=local, what="tree growth")
    return load_tree_model(final_checkpoint(run_dir))


__all__ = ["WorkerGroupExecutor", "grow_on_ray", "growth_loop_per_worker", "RUN_NAME"]
