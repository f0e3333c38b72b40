"""The diffusion stage on Ray Train + DeepSpeed, writing the same checkpoint directory as the
single-process trainer (treediff.diffusion.trainer), so `load_denoiser` reads either."""
from __future__ import annotations

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
    export, metrics = fit_stage(stage, data, trainer, name=f"diffusion-{cfg.mode_name}", local=local, tb_dir=tb_dir)
    tree_model = load_tree_model(tree_dir)
    arch = TreeDenoiser.for_tree(cfg, tree_model).arch()
    config = dict(config, diffusion=asdict(cfg), sampler=asdict(sampler))
    losses = list(metrics.get("loss_history") or [metrics.get("loss")])
    history = {"loss_start": losses[0], "loss_end": losses[-1], "loss_history": losses,
               "loss_history_every": per_epoch, "epochs": epochs}
    meta = denoiser_meta(tree_dir, out_dir, sha256_file(tree_dir / WEIGHTS), arch, cfg.mode_name, epochs * per_epoch,
                         history, complete=True, runtime="ray", workers=trainer.num_workers,
                         data_manifest_sha256=shard_set.digest())
    save_checkpoint(out_dir, export["model"], tree_model.tree, config, meta, extra_files={EMA_FILE: export["ema"]})
    log(f"[diffuse] {cfg.mode_name}: {epochs * per_epoch} steps on {trainer.num_workers} workers, final epoch loss "
        f"{metrics.get('loss', float('nan')):.4f}; checkpoint {out_dir}")
    return out_dir
