"""`treediff diffuse`: train the diffusion second stage on a run's finished tree, then sample.

For each conditioning mode (the `diffuse` job: `diffusion.conditioning`; the `pipeline` job:
`pipeline.modes`) it trains (or, when complete, reuses) `<run_dir>/diffusion/<mode>/`, draws
`sampler.samples_per_leaf` samples per leaf into `<run_dir>/samples/<mode>_leaves.png`, writes
the TreeVAE's own decodings of the same prior samples to `<run_dir>/samples/treevae_leaves.png`
and records the loss and paths under "diffusion" in `<run_dir>/metrics.json`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from treediff.data.tensors import to_model_range
from treediff.diffusion.grids import sample_per_leaf, save_leaf_grid
from treediff.diffusion.trainer import is_complete, load_denoiser, read_meta, train_diffusion
from treediff.vae.trainer import final_checkpoint

from .data import check_shape, load_split
from .metrics import update_metrics
from .runtime import ensure_shards, is_local, session
from .schema import JobConfig


def _config_changes(out_dir: Path, wanted: dict[str, Any]) -> list[str]:
    stored = json.loads((out_dir / "config.json").read_text()).get("diffusion", {})
    return sorted(k for k in wanted if stored.get(k) != wanted[k])


def run(cfg: JobConfig, plain: dict, modes: list[str] | None = None) -> dict[str, dict[str, Any]]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    tree_dir = final_checkpoint(run_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    modes = list(modes or [cfg.diffusion.conditioning])
    with session(cfg):
        return _run(cfg, plain, run_dir, tree_dir, device, modes)


def _run(cfg: JobConfig, plain: dict, run_dir: Path, tree_dir: Path, device: str, modes: list[str]):
    from cluster.tensorboard import TBLogger

    if cfg.cluster.runtime == "ray":
        shards = ensure_shards(cfg, plain, "diffuse")
        n_train, where = shards.count("train"), f"{cfg.trainer.num_workers} Ray Train workers"
    else:
        train = load_split(cfg.data, "train")
        check_shape(train, cfg.model.in_channels, cfg.model.image_size)
        x = to_model_range(train.images)
        n_train, where = len(x), f"one process on {device}"
    if cfg.sampler.w != 1.0 and cfg.diffusion.cond_drop_prob == 0.0:
        print(f"[diffuse] note: sampler.w={cfg.sampler.w} uses the unconditional branch, but "
              f"diffusion.cond_drop_prob=0 never trains it", flush=True)
    print(f"[diffuse] tree {tree_dir}; {n_train} training images; modes {modes}; {where}", flush=True)
    tb = TBLogger(run_dir / "tb" / "driver")
    results: dict[str, dict[str, Any]] = {}
    jobs = []
    for mode in modes:
        dcfg = replace(cfg.diffusion, conditioning=mode)
        out = run_dir / "diffusion" / dcfg.mode_name
        if is_complete(out):
            changed = _config_changes(out, asdict(dcfg))
            if changed:
                print(f"[diffuse] note: {out} was trained with other values of {', '.join('diffusion.' + k for k in changed)}"
                      f"; it is reused as is (remove it to retrain)", flush=True)
        jobs.append((dcfg, out, dict(plain, diffusion=asdict(dcfg))))
    if cfg.cluster.runtime == "ray":  # every mode first: side by side where the cluster has room
        from cluster.diffusion import train_modes_ray
        train_modes_ray(tree_dir, jobs, cfg.sampler, shards.root, cfg.trainer, local=is_local(cfg),
                        tb_dir=str(run_dir / "tb" / "diffusion"))
    for dcfg, out, plain_mode in jobs:
        name = dcfg.mode_name
        if cfg.cluster.runtime != "ray":
            train_diffusion(tree_dir, dcfg, cfg.sampler, x, out, plain_mode, device=device)
        denoiser, tree_model = load_denoiser(out, device=device)
        generator = torch.Generator().manual_seed(cfg.sampler.seed)
        samples, treevae = sample_per_leaf(denoiser, tree_model, cfg.sampler, generator, with_treevae=True)
        png = save_leaf_grid(samples, run_dir / "samples" / f"{name}_leaves.png")
        treevae_png = save_leaf_grid(treevae, run_dir / "samples" / "treevae_leaves.png")
        for leaf, images in samples.items():
            tb.images(f"diffusion/{name}/leaf_{leaf}", torch.cat([treevae[leaf], images]), 0, nrow=len(images))
        meta = read_meta(out)
        entry = {"loss_start": meta["loss_start"], "loss_end": meta["loss_end"], "steps": meta["steps"],
                 "train_wall_s": meta.get("wall_s"), "checkpoint": str(out), "samples": str(png),
                 "treevae_samples": str(treevae_png), "leaves": tree_model.tree.leaves,
                 "sampler": asdict(cfg.sampler)}
        update_metrics(run_dir, ["diffusion", name], entry)
        print(f"[diffuse] {name}: loss {entry['loss_start']:.4f} -> {entry['loss_end']:.4f} over {entry['steps']} "
              f"steps; samples {png}", flush=True)
        results[name] = entry
    tb.close()
    print(f"[diffuse] metrics written to {run_dir / 'metrics.json'}", flush=True)
    return results
