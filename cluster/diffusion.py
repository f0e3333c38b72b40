"""The diffusion stage on Ray Train + DeepSpeed, writing the same checkpoint directory as the
single-process trainer (treediff.diffusion.trainer), so `load_denoiser` reads either."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from treediff.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint, sha256_file
from treediff.data.shards import ShardSet
from treediff.diffusion.config import DiffusionConfig, SamplerConfig
from treediff.diffusion.model import TreeDenoiser
from treediff.diffusion.trainer import EMA_FILE, denoiser_meta, is_complete, verify_tree
from treediff.stages import DiffusionStage
from treediff.vae.trainer import load_tree_model

from .config import TrainerConfig
from .loop import StageData, fit_stage


def train_diffusion_ray(tree_dir: str | Path, cfg: DiffusionConfig, sampler: SamplerConfig, shards: str | Path,
                        out_dir: str | Path, config: dict[str, Any], trainer: TrainerConfig, *, local: bool,
                        tb_dir: str | None = None, log=print) -> Path:
    """Train (or reuse, when complete and its tree matches) the denoiser of `cfg.conditioning`."""
    out_dir, tree_dir = Path(out_dir), Path(tree_dir).resolve()
    sampler.check_against(cfg)
    if is_complete(out_dir):
        ckpt = load_checkpoint(out_dir)
        verify_tree(tree_dir, ckpt.meta, ckpt.tree, out_dir)
        log(f"[diffuse] {cfg.mode_name}: complete checkpoint {out_dir} found, not retraining")
        return out_dir
    shard_set = ShardSet.open(shards)
    per_epoch = max(1, shard_set.count("train") // cfg.batch_size)
    epochs = -(-cfg.steps // per_epoch)  # whole epochs covering diffusion.steps optimiser steps
    stage = DiffusionStage(cfg, str(tree_dir), epochs=epochs, name=f"diffusion/{cfg.mode_name}")
    data = StageData(str(Path(shards).resolve()), global_batch=cfg.batch_size, seed=cfg.seed)
    started = time.time()
    export, metrics = fit_stage(stage, data, trainer, name=f"diffusion-{cfg.mode_name}", local=local, tb_dir=tb_dir,
                                batch_key="diffusion.batch_size")
    per_epoch = max(1, shard_set.count("train") // metrics["global_batch"])  # trainer.batch_scaling may scale it
    tree_model = load_tree_model(tree_dir)
    arch = TreeDenoiser.for_tree(cfg, tree_model).arch()
    config = dict(config, diffusion=asdict(cfg), sampler=asdict(sampler))
    losses = list(metrics.get("loss_history") or [metrics.get("loss")])
    history = {"loss_start": losses[0], "loss_end": losses[-1], "loss_history": losses,
               "loss_history_every": per_epoch, "epochs": epochs}
    meta = denoiser_meta(tree_dir, out_dir, sha256_file(tree_dir / WEIGHTS), arch, cfg.mode_name, epochs * per_epoch,
                         history, complete=True, runtime="ray", workers=metrics["workers"],
                         data_manifest_sha256=shard_set.digest(), train_started_at=started, train_ended_at=time.time(),
                         wall_s=round(time.time() - started, 2))
    save_checkpoint(out_dir, export["model"], tree_model.tree, config, meta, extra_files={EMA_FILE: export["ema"]})
    log(f"[diffuse] {cfg.mode_name}: {epochs * per_epoch} steps on {metrics['workers']} workers, final epoch loss "
        f"{metrics.get('loss', float('nan')):.4f}; checkpoint {out_dir}")
    return out_dir


def train_modes_ray(tree_dir: str | Path, modes: list[tuple[DiffusionConfig, Path, dict[str, Any]]],
                    sampler: SamplerConfig, shards: str | Path, trainer: TrainerConfig, *, local: bool,
                    tb_dir: str | None = None, log=print) -> None:
    """Train several conditioning modes (config, checkpoint dir, config dict each): side by side,
    each on its own workers, when the cluster has the GPUs (or CPUs) for all of them at once;
    else one after the other."""
    import ray
    from concurrent.futures import ThreadPoolExecutor

    from .scaling import plan

    done = [cfg for cfg, out, _ in modes if is_complete(out)]
    for cfg, out, config in [m for m in modes if m[0] in done]:  # verified and reused
        train_diffusion_ray(tree_dir, cfg, sampler, shards, out, config, trainer, local=local, tb_dir=tb_dir, log=log)
    modes = [m for m in modes if m[0] not in done]
    if not modes:
        return
    workers = [plan(trainer, cfg.batch_size, cfg.mode_name, "diffusion.batch_size").workers for cfg, _, _ in modes]
    resource, per_worker = ("GPU", 1) if trainer.use_gpu else ("CPU", trainer.cpus_per_worker)
    free = ray.cluster_resources().get(resource, 0)
    needed = sum(workers) * per_worker
    if len(modes) == 1 or needed > free:
        if len(modes) > 1:
            log(f"[diffuse] modes one after the other: side by side they need {needed:g} {resource}s, the cluster "
                f"has {free:g}")
        for cfg, out, config in modes:
            train_diffusion_ray(tree_dir, cfg, sampler, shards, out, config, trainer, local=local, tb_dir=tb_dir, log=log)
        return
    log(f"[diffuse] modes {[cfg.mode_name for cfg, _, _ in modes]} side by side on {needed:g} of the cluster's "
        f"{free:g} {resource}s")
    with ThreadPoolExecutor(len(modes)) as pool:
        futures = [pool.submit(train_diffusion_ray, tree_dir, cfg, sampler, shards, out, config, trainer, local=local,
                               tb_dir=tb_dir, log=log) for cfg, out, config in modes]
        for f in futures:
            f.result()
