"""Tree growth on Ray: every phase is a Ray task that trains on Ray Train + DeepSpeed workers,
and leaf probabilities are counted over the shards by parallel Ray tasks.

`RayExecutor` plugs into `treediff.vae.trainer.GrowthRun`, which keeps the growth rules, the
decision log and the phase checkpoints (so a re-run resumes after the last complete phase, as
in one process). The driver only chains: it submits a phase task with the model's state (for a
subtree phase: the leaf already split, new modules initialised), waits for the trained weights,
then submits the counting tasks whose probabilities decide the next split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from treediff.data.shards import ShardSet
from treediff.data.stream import StreamConfig, make_loader
from treediff.stages import TreePhaseStage
from treediff.vae.config import OptimConfig, TreeVAEConfig
from treediff.vae.model import TreeVAE

from .config import TrainerConfig
from .loop import StageData, StageFailed, fit_stage


def _phase_task():
    import ray

    @ray.remote(num_cpus=0, max_retries=0)
    def phase(stage: TreePhaseStage, data: StageData, trainer: TrainerConfig, name: str, local: bool,
              tb_dir: str | None) -> tuple[dict, dict]:
        """One growth phase: a TorchTrainer run launched from inside a Ray task."""
        export, metrics = fit_stage(stage, data, trainer, name=name, local=local, tb_dir=tb_dir)
        return export, metrics | {"ray_task_id": ray.get_runtime_context().get_task_id()}
    return phase


def _count_task():
    import ray

    @ray.remote(num_cpus=1, max_retries=1)
    def count(model_cfg: TreeVAEConfig, tree_json: str, state: dict, shards_path: str, part: int, parts: int,
              batch: int) -> tuple[list[str], np.ndarray]:
        """P(leaf | x) of the training samples in shard part `part` of `parts` (exact pass)."""
        from treediff.tree import Tree

        torch.set_num_threads(1)
        model = TreeVAE(model_cfg, Tree.from_json(tree_json))
        model.load_state_dict(state, strict=True)
        model.eval()
        keys, probs = [], []
        loader = make_loader(ShardSet.open(shards_path), "train", StreamConfig(
            batch_size=batch, rank=part, world_size=parts, shuffle_buffer=0, verify=False))
        with torch.no_grad():
            for x, _, k in loader:
                probs.append(model.leaf_probs(x).numpy())
                keys += list(k)
        return keys, np.concatenate(probs) if probs else np.zeros((0, len(model.tree.leaves)))
    return count


class RayExecutor:
    """Trains growth phases and counts leaf probabilities on a Ray cluster (see the module doc)."""

    def __init__(self, model_cfg: TreeVAEConfig, optim: OptimConfig, trainer: TrainerConfig, shards: str | Path,
                 run_dir: str | Path, local: bool, log: Callable[[str, dict[str, Any]], None] | None = None):
        self.model_cfg, self.optim, self.trainer = model_cfg, optim, trainer
        self.shards = str(Path(shards).resolve())
        self.run_dir = Path(run_dir)
        self.local = local
        self.log = log or (lambda event, data: None)
        self.keys: list[str] | None = None  # the training samples, in leaf_probs' row order
        shard_set = ShardSet.open(self.shards)
        n_shards = len(shard_set.shards("train"))
        # written into every phase checkpoint: the exact data the tree was grown on
        self.checkpoint_meta = {"data_manifest_sha256": shard_set.digest(), "runtime": "ray",
                                "workers": trainer.num_workers}
        self.count_parts = max(1, min(n_shards, trainer.num_workers * trainer.cpus_per_worker))

    def train(self, model: TreeVAE, *, subtree: int | None, epochs: int, desc: str,
              subset: np.ndarray | None = None, phase: int = 0) -> dict[str, Any] | None:
        import ray

        if epochs == 0:
            return None
        keys = None
        if subset is not None:
            if self.keys is None or len(self.keys) != len(subset):
                raise RuntimeError("RayExecutor.train: a subset needs the keys of the last leaf_probs call")
            keys = frozenset(k for k, keep in zip(self.keys, subset) if keep)
        stage = TreePhaseStage(self.model_cfg, model.tree.to_json(), {k: v.cpu() for k, v in model.state_dict().items()},
                               subtree, self.optim, epochs=epochs, name=f"tree/{desc}")
        data = StageData(self.shards, global_batch=self._batch(keys), keys=keys, seed=self.optim.seed + phase)
        # named after the phase checkpoint it leads to: a re-run after a killed driver gets the same
        # Ray Train run back, and Ray Train resumes it from its last checkpoint
        name = f"tree-{phase:03d}-{desc.replace('@', '-')}"
        try:
            export, metrics = ray.get(_phase_task().remote(stage, data, self.trainer, name, self.local,
                                                           str(self.run_dir / "tb" / "tree")))
        except ray.exceptions.RayTaskError as e:  # the phase task's own exception, without Ray's wrapping
            cause = e.cause if isinstance(e.cause, Exception) else e
            raise StageFailed(f"growth phase {desc}: {cause}") from e
        model.load_state_dict(export["model"], strict=True)
        model.set_trainable(None)
        model.eval()
        self.log("phase-metrics", {"phase": desc, **metrics})
        return {"ray_task_id": metrics["ray_task_id"], "ray_train_run": name}

    def _batch(self, keys: frozenset | None) -> int:
        """The global batch: optim.batch_size, shrunk for a small subset, kept divisible by the workers."""
        step = self.trainer.num_workers * self.trainer.grad_accum
        batch = self.optim.batch_size if keys is None else min(self.optim.batch_size, max(step, len(keys)))
        return max(step, batch - batch % step)

    def leaf_probs(self, model: TreeVAE) -> np.ndarray:
        import ray

        state = {k: v.cpu() for k, v in model.state_dict().items()}
        state_ref = ray.put(state)
        count = _count_task()
        parts = ray.get([count.remote(self.model_cfg, model.tree.to_json(), state_ref, self.shards, i,
                                      self.count_parts, 512) for i in range(self.count_parts)])
        keys = [k for part_keys, _ in parts for k in part_keys]
        probs = np.concatenate([p for _, p in parts])
        order = np.argsort(keys, kind="stable")  # a fixed order, whatever the number of parts
        self.keys = [keys[i] for i in order]
        return probs[order]


__all__ = ["RayExecutor"]
