"""What the contrastive routing term costs per optimiser step, in one process, on real colour pixels.

    .venv/bin/python bench/contrastive.py [--threads 2] [--repeat 10] [--leaves 2 4]
    .venv/bin/python bench/contrastive.py --model-overrides model.latent_channels=64 model.bottom_up_channels=128

The colour quick preset's CNN-TreeVAE (`experiment=cifar10_quick`: cnn2, latents 16 x 4 x 4,
bottom-up 32 channels) on `data=photo_patches` images, one step = forward, loss, backward, Adam
step on 128 samples. Three ways, all measured here in one run on the same batch and weights:

  plain      128 images, model.contrastive=false (the ELBO alone)
  term       64 images x 2 views, already augmented: the ELBO over 128 samples + the term
             (routers' NT-Xent at every trained router, projections' NT-Xent at the root)
  term+aug   the same, with the per-image torchvision augmentation of the 64 images x 2 views
             (the preset model.contrastive_augment) inside the timed step, as training does

Prints ms per step and the ratios term/plain (what the term adds to the model's step) and
term+aug/plain (what a training step with the term costs against one without it).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def step_ms(step, repeat: int) -> float:
    """Median ms of `repeat` calls after two warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--samples", type=int, default=128, help="samples per step (views included)")
    ap.add_argument("--leaves", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--model-overrides", nargs="*", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from jobs.cli import compose
    from jobs.data import load_split
    from treediff.data.augment import augment_views, contrastive_augment
    from treediff.vae import TreeVAE
    from treediff.vae.contrastive import pair_views

    cfg = compose(["experiment=cifar10_quick", "data=photo_patches", *args.model_overrides])[0]
    train = load_split(cfg.data, "train")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train.images), generator=g)[:args.samples]
    x = torch.from_numpy(train.images[pick.numpy()]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    half = x[:args.samples // 2]
    augment = contrastive_augment(cfg.model.contrastive_augment, cfg.model.image_size, cfg.model.in_channels)
    views = pair_views(augment_views(half, augment, 2))  # (2B, C, H, W) = [x'; x'']

    print(f"contrastive term, one step of {args.samples} samples, {args.threads} threads, model "
          f"{cfg.model.encoder} latents {cfg.model.latent_channels} bottom-up {cfg.model.bottom_up_channels}, "
          f"augmentation {cfg.model.contrastive_augment!r}; median of {args.repeat} steps")
    aug_ms = step_ms(lambda: augment_views(half, augment, 2), args.repeat)
    for leaves in args.leaves:
        row = {}
        for name, contrastive in (("plain", False), ("term", True), ("term+aug", True)):
            torch.manual_seed(0)
            model = TreeVAE(replace(cfg.model, contrastive=contrastive))
            while len(model.tree.leaves) < leaves:
                model.split(min(model.tree.leaves))
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

            def step():
                if name == "plain":
                    out = model(x)
                elif name == "term":
                    out = model(views, views=2)
                else:
                    out = model(pair_views(augment_views(half, augment, 2)), views=2)
                loss = out.loss(0.5)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            row[name] = step_ms(step, args.repeat)
        print(f"  {leaves} leaves: plain {row['plain']:7.1f} ms | term {row['term']:7.1f} ms "
              f"({row['term'] / row['plain']:.2f}x) | term+aug {row['term+aug']:7.1f} ms "
              f"({row['term+aug'] / row['plain']:.2f}x)")
    print(f"  augmentation alone ({args.samples // 2} images x 2 views, torchvision v2 per image): {aug_ms:.1f} ms")


if __name__ == "__main__":
    main()
