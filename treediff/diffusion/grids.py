"""Per-leaf sampling and sample grids (one row per leaf).

`sample_per_leaf` draws `samples_per_leaf` prior conditions for every leaf of the frozen tree
(the prior latents along that leaf's path, and its decoded x_hat) and denoises them all in one
sampler call. `save_leaf_grid` writes one PNG: a row per leaf, labelled with the leaf id.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..vae.model import TreeVAE
from .config import SamplerConfig
from .model import Condition, TreeDenoiser, prior_condition
from .sampler import ddim_sample, ddpm_sample


@torch.no_grad()
def sample_per_leaf(denoiser: TreeDenoiser, tree_model: TreeVAE, sampler_cfg: SamplerConfig,
                    generator: torch.Generator | None = None, with_treevae: bool = False, progress: bool = False):
    """leaf -> images (samples_per_leaf, C, H, W) in [-1, 1], for every leaf of the tree.

    With `with_treevae`, also returns the TreeVAE's own decodings x_hat of the same prior
    samples (leaf -> images), for comparison: `(samples, treevae)`.
    """
    sampler_cfg.check_against(denoiser.cfg)
    denoiser.eval()
    leaves = tree_model.tree.leaves
    k = sampler_cfg.samples_per_leaf
    device = next(denoiser.parameters()).device
    fixed = torch.tensor(leaves, dtype=torch.long).repeat_interleave(k)
    cond: Condition = prior_condition(tree_model, len(fixed), generator, leaf=fixed).to(device)
    schedule = denoiser.schedule().to(device)
    shape = (len(fixed), denoiser.in_channels, denoiser.image_size, denoiser.image_size)
    # draw x_T on the CPU generator, so results do not depend on the device's RNG
    x_T = torch.randn(shape, generator=generator).to(device)
    eps_fn = denoiser.eps_fn(cond, sampler_cfg.w)
    noise_gen = None
    if sampler_cfg.method == "ddpm" or sampler_cfg.eta > 0:
        noise_gen = generator if device.type == "cpu" else torch.Generator(device).manual_seed(
            int(torch.randint(2 ** 62, (1,), generator=generator)))
    if sampler_cfg.method == "ddim":
        x = ddim_sample(eps_fn, shape, schedule, steps=sampler_cfg.steps, eta=sampler_cfg.eta,
                        spacing=sampler_cfg.spacing, generator=noise_gen, x_T=x_T, clip_x0=sampler_cfg.clip_x0,
                        progress=progress)
    else:
        x = ddpm_sample(eps_fn, shape, schedule, generator=noise_gen, x_T=x_T, variance=sampler_cfg.variance,
                        clip_x0=sampler_cfg.clip_x0, progress=progress)
    x = x.clamp(-1, 1).cpu()
    samples = {leaf: x[i * k:(i + 1) * k] for i, leaf in enumerate(leaves)}
    if not with_treevae:
        return samples
    x_hat = cond.x_hat.cpu()
    return samples, {leaf: x_hat[i * k:(i + 1) * k] for i, leaf in enumerate(leaves)}


def _upscale(images: torch.Tensor, min_size: int) -> torch.Tensor:
    h = images.shape[-1]
    factor = max(1, math.ceil(min_size / h))
    return F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images


def save_leaf_grid(images_by_leaf: dict[int, torch.Tensor], path: str | Path, min_size: int = 32,
                   label: bool = True) -> Path:
    """One PNG, a row per leaf (in the dict's order), images in [-1, 1].

    Small images are upscaled with nearest interpolation to at least `min_size` pixels (8x8 -> x4);
    with `label`, a left margin names each row's leaf id.
    """
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    if not images_by_leaf:
        raise ValueError("save_leaf_grid: no images")
    path = Path(path)
    rows = list(images_by_leaf.items())
    ncol = max(len(v) for _, v in rows)
    tiles = []
    for _, imgs in rows:
        imgs = imgs.detach().float().cpu().clamp(-1, 1)
        if imgs.shape[1] == 1:
            imgs = imgs.repeat(1, 3, 1, 1)
        if len(imgs) < ncol:  # pad short rows with white tiles
            imgs = torch.cat([imgs, imgs.new_ones(ncol - len(imgs), *imgs.shape[1:])])
        tiles.append(imgs)
    tiles = _upscale((torch.cat(tiles) + 1) / 2, min_size)
    pad = 2
    grid = make_grid(tiles, nrow=ncol, padding=pad, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype("uint8")
    img = Image.fromarray(array)
    if label:
        margin = 44
        canvas = Image.new("RGB", (img.width + margin, img.height), "white")
        canvas.paste(img, (margin, 0))
        draw = ImageDraw.Draw(canvas)
        cell = tiles.shape[-1] + pad
        for r, (leaf, _) in enumerate(rows):
            draw.text((4, pad + r * cell + cell // 2 - 6), f"leaf {leaf}", fill="black")
        img = canvas
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path
