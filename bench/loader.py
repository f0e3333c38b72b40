"""Shard streaming throughput against the training step's consumption (32x32 RGB PNG).

    .venv/bin/python bench/loader.py [--images 4096] [--workers 2]

Writes random 32x32x3 images (PNG compresses noise worst) into shards of 256 in a temporary
directory, streams one epoch through `make_loader` with 0 and with N loader workers, and
times training steps of the consumers on the same batch size: the diffusion U-Net (the
reference's CIFAR-10 Diffuse-TreeVAE widths: 64 channels, mults 1,2,2,2) and the CIFAR-10
CNN-TreeVAE (depth 1). Every line ends with its ratio; the loader should be >= 5x the
fastest consumer.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import timed
from treediff.data.arrays import ImageArrays
from treediff.data.shards import ShardSet, write_shard_set
from treediff.data.split import ArraySplit
from treediff.data.stream import StreamConfig, make_loader
from treediff.diffusion.schedule import NoiseSchedule
from treediff.diffusion.unet import UNet, UNetConfig
from treediff.vae import TreeVAE, TreeVAEConfig


def loader_rate(shards: ShardSet, batch: int, workers: int) -> float:
    loader = make_loader(shards, "train", StreamConfig(batch_size=batch, num_workers=workers, shuffle_buffer=1000))
    it = iter(loader)
    n = len(next(it)[0])  # the first batch pays for worker start-up; not timed
    t0, n = time.perf_counter(), 0
    for x, _, _ in it:
        n += len(x)
    return n / (time.perf_counter() - t0)


def step_rate(step, batch: int, steps: int = 5) -> float:
    return batch / timed(step, steps)


def unet_step(batch: int):
    net = UNet(UNetConfig(image_size=32, in_channels=3, out_channels=3, model_channels=64, channel_mult=(1, 2, 2, 2),
                          num_res_blocks=2, attention_resolutions=(), num_heads=8, dropout=0.1))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    sched = NoiseSchedule.from_name("linear", 1000)
    x0 = torch.rand(batch, 3, 32, 32) * 2 - 1

    def step():
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        loss = F.mse_loss(net(sched.q_sample(x0, t, noise), t), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def tree_step(batch: int):
    model = TreeVAE(TreeVAEConfig(in_channels=3, image_size=32, encoder="cnn2", representation_dim=4,
                                  latent_channels=64, bottom_up_channels=128, likelihood="gaussian"))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, 32, 32) * 2 - 1

    def step():
        loss = model(x).loss(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    split = ArraySplit(ImageArrays(rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8),
                                   rng.integers(0, 10, args.images), [str(i) for i in range(10)], "noise/train"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_shard_set({"train": split}, f"{tmp}/set", samples_per_shard=256, progress=False)
        write_rate = args.images / (time.perf_counter() - t0)
        shards = ShardSet.open(f"{tmp}/set")
        single = loader_rate(shards, args.batch, 0)
        multi = loader_rate(shards, args.batch, args.workers)
    unet = step_rate(unet_step(args.batch), args.batch)
    tree = step_rate(tree_step(args.batch), args.batch)
    print(f"machine: {torch.get_num_threads()} torch threads, batch {args.batch}, {args.images} images 32x32x3 PNG")
    rows = [("prepare (write shards)", write_rate, "ratio to reading", write_rate / multi),
            ("loader, in-process", single, f"ratio to {args.workers} workers", single / multi),
            (f"loader, {args.workers} workers", multi, "ratio to in-process", multi / single),
            ("U-Net train step", unet, "loader / consumption ratio", multi / unet),
            ("TreeVAE train step", tree, "loader / consumption ratio", multi / tree)]
    for name, rate, what, ratio in rows:
        print(f"{name:24s}{rate:10.1f} img/s   {what}: {ratio:.2f}x")

if __name__ == "__main__":
    main()
