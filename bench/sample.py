"""DDIM sampling throughput per leaf batch, and the path encoder's cost against one U-Net call.

    .venv/bin/python bench/sample.py [--batch 16] [--steps 10] [--size cifar|digits]

Builds a TreeDiffusion denoiser (path conditioning) at the reference CIFAR-10 sizes (32x32x3,
64 channels, mults 1,2,2,2, attention at 16 px; tree latents 8x4x4, depth 6) or the embedded
default's (8x8x1), with a synthetic leaf batch: every sample on one root-to-leaf path of depth 6.
Prints DDIM images/s for that batch, the time of one U-Net evaluation and of one path-encoder
call on the same batch, and their ratio (the target is < 5 %).
"""
from __future__ import annotations

import argparse

import torch

from common import timed
from treediff.diffusion.config import DiffusionConfig
from treediff.diffusion.model import Condition, TreeDenoiser
from treediff.diffusion.sampler import ddim_sample

SIZES = {
    "cifar": dict(image_size=32, in_channels=3, z_dim=8 * 4 * 4, depth=6,
                  unet=dict(model_channels=64, channel_mult=[1, 2, 2, 2], num_res_blocks=2, attention_resolutions=[16])),
    "digits": dict(image_size=8, in_channels=1, z_dim=8 * 2 * 2, depth=4,
                   unet=dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4])),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", default="cifar", choices=sorted(SIZES))
    args = ap.parse_args()
    s = SIZES[args.size]
    cfg = DiffusionConfig(conditioning="path", num_heads=4, dropout=0.0, **s["unet"])
    net = TreeDenoiser(cfg, s["image_size"], s["in_channels"], s["z_dim"], 2 ** (s["depth"] + 1) - 1).eval()
    b, depth = args.batch, s["depth"]
    path = [0]
    for _ in range(depth):
        path.append(2 * path[-1] + 1)  # the leftmost root-to-leaf path
    node_ids = torch.tensor(path).repeat(b, 1)
    cond = Condition(leaves=node_ids[:, -1].clone(), node_ids=node_ids, z_path=torch.randn(b, depth + 1, s["z_dim"]),
                     mask=torch.ones(b, depth + 1, dtype=torch.bool),
                     x_hat=torch.zeros(b, s["in_channels"], s["image_size"], s["image_size"]))
    x = torch.randn(b, s["in_channels"], s["image_size"], s["image_size"])
    t = torch.full((b,), 500, dtype=torch.long)
    schedule = net.schedule()
    with torch.no_grad():
        vec, _ = net.inputs(cond)
        t_unet = timed(lambda: net.unet(x, t, cond=vec), 3)
        t_path = timed(lambda: net.path_encoder(cond.node_ids, cond.z_path, cond.mask), 20)
        t_ddim = timed(lambda: ddim_sample(net.eps_fn(cond), x.shape, schedule, steps=args.steps,
                                           generator=torch.Generator().manual_seed(0)), 1)
    print(f"{args.size} sizes, leaf batch {b}, path depth {depth}, {torch.get_num_threads()} threads:")
    print(f"  DDIM {args.steps} steps: {b / t_ddim:8.2f} images/s   ({t_ddim / args.steps * 1e3:.1f} ms per step; "
          f"{t_ddim / args.steps / t_unet:.2f}x one U-Net call)")
    print(f"  U-Net call {t_unet * 1e3:8.2f} ms, path encoder {t_path * 1e3:6.3f} ms   ratio path/U-Net = "
          f"{t_path / t_unet * 100:.2f} %")


if __name__ == "__main__":
    main()
