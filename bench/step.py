"""Overhead of the Ray Train + DeepSpeed loop over a plain PyTorch loop, 1 worker, per step.

    .venv/bin/python bench/step.py [--epochs 3] [--rounds 3] [--threads 1]

The embedded default's two training stages (the diffusion U-Net on a frozen 4-leaf tree, and
the whole 4-leaf CNN-TreeVAE), on the digits shards, batch 64: once in a plain loop in this
process (`treediff.stages.base.run_plain`, `threads` torch threads), once through
`cluster.loop.fit_stage` on a local Ray cluster with one worker of `threads` CPUs (DeepSpeed,
fp32, gloo; one rank runs ZeRO stage 0). The same stream, loss and optimiser; the first epoch
is not timed. Prints ms per step and images/s of each, and the overhead ratio plain/Ray
(target <= 1.10x).

The two loops cannot run side by side on 2 cores, so they run one after the other, and on these
shared machines the speed drifts by 20 % and more between minutes (one plain/Ray pair read 1.23x,
the next 0.83x). So the pair is measured in `rounds` rounds, plain then Ray in each: the printed
ratio is the median of the rounds' ratios, with their range beside it; a range that straddles
1.0x says the overhead is below what this machine can resolve.

The default gives the worker one of this machine's two cores and leaves the other to Ray's own
processes (GCS, raylet, the Train controller: ~6 % of a core when idle), as workers are sized on
any node. `--threads 2` puts the worker on both cores, beside those processes: on 2 cores that
alone slows a plain loop by ~9 % (measured with an idle Ray cluster up), and the ratio shows it.
"""
from __future__ import annotations

import argparse
import tempfile
from statistics import median

from common import default_config, diffusion_stage, digits_shards, plain_rate, ray_rate, tree_checkpoint, tree_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from cluster.config import ClusterConfig
    from cluster.session import prepare_environment, ray_session
    cluster = ClusterConfig(num_cpus=args.threads)
    prepare_environment(cluster)
    cfg = default_config()
    batch = cfg.diffusion.batch_size
    trainer = replace_trainer(cfg.trainer, args.threads)
    with tempfile.TemporaryDirectory(prefix="tdb-") as tmp:
        shards = digits_shards(tmp)
        ckpt = tree_checkpoint(tmp, cfg.model)
        stages = {"diffusion U-Net": lambda: diffusion_stage(cfg, ckpt, args.epochs),
                  "TreeVAE (4 leaves)": lambda: tree_stage(cfg, args.epochs)}
        plain: dict[str, list[float]] = {name: [] for name in stages}
        ray: dict[str, list[float]] = {name: [] for name in stages}
        with ray_session(cluster):
            for _ in range(args.rounds):
                for name, make in stages.items():
                    plain[name].append(plain_rate(make(), shards, batch, args.threads))
                    ray[name].append(ray_rate(make(), shards, batch, trainer))
    print(f"step overhead, digits batch {batch}, {args.threads} threads, 1 worker (DeepSpeed, fp32; ZeRO stage 0 on one rank), "
          f"median of epochs 2-{args.epochs}, {args.rounds} rounds of plain then Ray:")
    for name in stages:
        ratios = [p / r for p, r in zip(plain[name], ray[name])]
        p, r = median(plain[name]), median(ray[name])
        print(f"  {name:20s} plain {batch / p * 1e3:7.1f} ms/step {p:7.1f} img/s | Ray Train + DeepSpeed "
              f"{batch / r * 1e3:7.1f} ms/step {r:7.1f} img/s   rounds' ratios {min(ratios):.3f}-{max(ratios):.3f}x   "
              f"overhead ratio plain/Ray = {median(ratios):.3f}x")


def replace_trainer(trainer, threads: int):
    from dataclasses import replace
    return replace(trainer, num_workers=1, cpus_per_worker=threads, max_failures=0)


if __name__ == "__main__":
    main()
