"""Throughput of the evaluation farm with 1 and 2 workers (samples/s, and the ratio).

    .venv/bin/python bench/farm.py [--samples 256] [--chunk 32] [--extractor pixels|inception] [--steps 50]

Builds the embedded default's models (configs: model tree_small with 4 leaves, diffusion digits;
weights from a 1-step run: the timing does not depend on them), starts a local Ray cluster on
127.0.0.1 and runs generation chunks (DDIM sampling + feature extraction + the float64 sums)
through cluster.farm with 1 and then 2 workers, after a warm-up run that pays for the worker
start and model loading. Ideal scaling on 2 cores is a ratio of 2.0.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch


def build(tmp: Path) -> Path:
    from jobs.cli import compose
    from treediff.checkpoint import save_checkpoint
    from treediff.diffusion.trainer import train_diffusion
    from treediff.vae import TreeVAE

    cfg, _ = compose(["cluster=local"])
    model = TreeVAE(cfg.model)
    model.split(1)
    model.split(2)  # 4 leaves
    tree = save_checkpoint(tmp / "tree" / "phase-002-finetune", model.state_dict(), model.tree,
                           {"model": asdict(cfg.model)}, {})
    x = torch.rand(64, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size) * 2 - 1
    from dataclasses import replace
    return train_diffusion(tree, replace(cfg.diffusion, steps=1, log_every=1), cfg.sampler, x, tmp / "diffusion" / "path",
                           log=lambda *a: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--extractor", default="pixels", choices=["pixels", "inception"])
    args = ap.parse_args()

    from cluster.config import ClusterConfig
    from cluster.session import prepare_environment
    prepare_environment(ClusterConfig(num_cpus=2))
    from cluster.farm import run_farm
    from cluster.session import ray_session
    from treediff.eval.chunks import Chunk, split_indices
    from treediff.metrics.features import inception_weights

    spec = {"name": args.extractor, "weights": inception_weights() if args.extractor == "inception" else None}
    with tempfile.TemporaryDirectory() as d:
        ckpt = build(Path(d))

        def chunks(n):
            return [Chunk("bench", "generation", idx, spec, checkpoint=str(ckpt), sampler={"steps": args.steps})
                    for idx in split_indices(n, args.chunk)]

        with ray_session(ClusterConfig(num_cpus=2)):
            run_farm(chunks(2 * args.chunk), workers=2, desc="warm-up")
            rates = {}
            for workers in (1, 2):
                t0 = time.perf_counter()
                run_farm(chunks(args.samples), workers=workers, desc=f"{workers} worker(s)")
                rates[workers] = args.samples / (time.perf_counter() - t0)
    print(f"farm, {args.samples} samples, DDIM {args.steps} steps, {args.extractor} features, chunks of {args.chunk}:")
    print(f"  1 worker : {rates[1]:8.1f} samples/s")
    print(f"  2 workers: {rates[2]:8.1f} samples/s   ratio 2/1 = {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
