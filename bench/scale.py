"""Speed-up from 1 to 2 workers: the diffusion stage's training, and the evaluation farm.

    .venv/bin/python bench/scale.py [--epochs 4] [--samples 256] [--chunk 32] [--steps 50]
                                    [--extractor pixels|inception]

One local Ray cluster on 127.0.0.1 with 2 CPUs. Training: the embedded default's diffusion
stage (digits) through `cluster.loop.fit_stage`, each worker one CPU (one torch thread;
DeepSpeed over gloo at trainer=cpu's ZeRO stage, or --zero); images/s is the loop's own
per-epoch figure, median of epochs 2.. . The target figure keeps the batch per worker (64, the
default's batch) as workers are added, as one scales data parallel training (the global batch
doubles); the second line splits one global batch of 64 over the two (32 each), where this small
U-Net's step hardly shrinks with the batch (an 8x8 step at batch 32 costs 0.66x the step at
batch 64 here), so that line is bounded near 1.5x by the model, not by the runtime.
Farm: generation chunks (DDIM sampling, feature extraction, the float64 sums) through
`cluster.farm.run_farm` with 1 and 2 tasks in flight, after a warm-up that pays for worker
start-up and model loading. Ideal is 2.0x; targets: training >= 1.6x, farm >= 1.7x.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

from common import default_config, denoiser_checkpoint, diffusion_stage, digits_shards, ray_rate


def farm_rates(ckpt, samples: int, chunk: int, steps: int, extractor: str) -> dict[int, float]:
    from cluster.farm import run_farm
    from treediff.eval.chunks import Chunk, split_indices
    from treediff.metrics.features import inception_weights

    spec = {"name": extractor, "weights": inception_weights() if extractor == "inception" else None}

    def chunks(n):
        return [Chunk("bench", "generation", idx, spec, checkpoint=str(ckpt), sampler={"steps": steps})
                for idx in split_indices(n, chunk)]
    run_farm(chunks(2 * chunk), workers=2, desc="warm-up")
    rates = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        run_farm(chunks(samples), workers=workers, desc=f"{workers} worker(s)")
        rates[workers] = samples / (time.perf_counter() - t0)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--extractor", default="pixels", choices=["pixels", "inception"])
    ap.add_argument("--zero", type=int, default=None, help="ZeRO stage (default: configs/trainer/cpu.yaml's)")
    args = ap.parse_args()

    from cluster.config import ClusterConfig
    from cluster.session import prepare_environment, ray_session
    cluster = ClusterConfig(num_cpus=2)
    prepare_environment(cluster)
    cfg = default_config(*([] if args.zero is None else [f"trainer.zero_stage={args.zero}"]))
    batch = cfg.diffusion.batch_size
    with tempfile.TemporaryDirectory(prefix="tdb-") as tmp:
        shards = digits_shards(tmp)
        ckpt = denoiser_checkpoint(tmp, cfg)
        tree = ckpt.parent.parent / "tree"
        with ray_session(cluster):
            train = {(n, b): ray_rate(diffusion_stage(cfg, tree, args.epochs), shards, b,
                                      replace(cfg.trainer, num_workers=n, cpus_per_worker=1, max_failures=0))
                     for n, b in ((1, batch), (2, 2 * batch), (2, batch))}
            farm = farm_rates(ckpt, args.samples, args.chunk, args.steps, args.extractor)
    one = train[1, batch]
    print("scaling on a local Ray cluster, 2 CPUs, one CPU per worker:")
    print(f"  diffusion training, digits, ZeRO-{cfg.trainer.zero_stage}, batch {batch} per worker: 1 worker {one:7.1f} "
          f"img/s | 2 workers {train[2, 2 * batch]:7.1f} img/s   speed-up 2/1 = {train[2, 2 * batch] / one:.2f}x")
    print(f"  diffusion training, digits, ZeRO-{cfg.trainer.zero_stage}, one batch of {batch} split over the workers: "
          f"1 worker {one:7.1f} img/s | 2 workers {train[2, batch]:7.1f} img/s   speed-up 2/1 = "
          f"{train[2, batch] / one:.2f}x")
    print(f"  FID farm, {args.samples} samples, DDIM {args.steps} steps, {args.extractor} features, chunks of "
          f"{args.chunk}: 1 worker {farm[1]:7.1f} samples/s | 2 workers {farm[2]:7.1f} samples/s   "
          f"speed-up 2/1 = {farm[2] / farm[1]:.2f}x")


if __name__ == "__main__":
    main()
