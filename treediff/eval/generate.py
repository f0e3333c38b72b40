"""Generation with one seed per sample, so an image does not depend on the batch it is drawn in.

Sample i of an evaluation uses `sample_generator(seed, i)` for everything random about it: its
leaf (routed from the prior, or fixed), its path latents, x_T and any per-step sampler noise.
A farm of workers that splits the indices any way it likes therefore draws the same images
(EDM's per-seed convention) as one process that draws them all.
"""
from __future__ import annotations

import numpy as np
import torch

from ..diffusion.config import SamplerConfig
from ..diffusion.model import Condition, TreeDenoiser, leaf_condition, posterior_condition, prior_condition
from ..diffusion.sampler import ddim_sample, ddpm_sample
from ..vae.model import TreeVAE


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of sample `index` of an evaluation seeded `seed`."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@torch.no_grad()
def denoise(denoiser: TreeDenoiser, cond: Condition, sampler_cfg: SamplerConfig,
            generators: list[torch.Generator]) -> torch.Tensor:
    """Run the configured sampler for the conditions `cond`, row b drawing from generators[b]."""
    sampler_cfg.check_against(denoiser.cfg)
    denoiser.eval()
    device = next(denoiser.parameters()).device
    schedule = denoiser.schedule().to(device)
    shape = (len(cond), denoiser.in_channels, denoiser.image_size, denoiser.image_size)
    x_T = torch.stack([torch.randn(shape[1:], generator=g) for g in generators]).to(device)
    eps_fn = denoiser.eps_fn(cond.to(device), sampler_cfg.w)
    if sampler_cfg.method == "ddim":
        x = ddim_sample(eps_fn, shape, schedule, steps=sampler_cfg.steps, eta=sampler_cfg.eta,
                        spacing=sampler_cfg.spacing, generator=generators, x_T=x_T, clip_x0=sampler_cfg.clip_x0)
    else:
        x = ddpm_sample(eps_fn, shape, schedule, generator=generators, x_T=x_T, variance=sampler_cfg.variance,
                        clip_x0=sampler_cfg.clip_x0)
    return x.clamp(-1, 1).cpu()


@torch.no_grad()
def generate(denoiser: TreeDenoiser, tree_model: TreeVAE, sampler_cfg: SamplerConfig, seed: int,
             indices: list[int], leaf: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples `indices` of the evaluation `seed`: (images, TreeVAE decodings x_hat, leaves).

    leaf None: each sample's leaf is routed from the tree's prior; an int fixes it. Images are
    (N, C, H, W) in [-1, 1] on the CPU.
    """
    gens = [sample_generator(seed, i) for i in indices]
    cond = Condition.cat([prior_condition(tree_model, 1, g, leaf=leaf) for g in gens])
    return denoise(denoiser, cond, sampler_cfg, gens), cond.x_hat.cpu(), cond.leaves.cpu()


@torch.no_grad()
def generate_leaf(denoiser: TreeDenoiser, tree_model: TreeVAE, sampler_cfg: SamplerConfig, seed: int,
                  indices: list[int], leaf: int, min_prob: float, draws: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples `indices` of `leaf` from high-probability prior draws (diffusion.model.leaf_condition):
    (images, TreeVAE decodings x_hat, leaves, each kept draw's P(leaf))."""
    gens = [sample_generator(seed, i) for i in indices]
    kept = [leaf_condition(tree_model, leaf, g, min_prob=min_prob, draws=draws) for g in gens]
    cond = Condition.cat([c for c, _ in kept])
    return denoise(denoiser, cond, sampler_cfg, gens), cond.x_hat.cpu(), cond.leaves.cpu(), torch.tensor([p for _, p in kept])


@torch.no_grad()
def reconstruct(denoiser: TreeDenoiser, tree_model: TreeVAE, sampler_cfg: SamplerConfig, seed: int,
                indices: list[int], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstructions of images x (N, C, H, W) in [-1, 1] (test samples `indices`): the denoiser
    conditioned on each image's posterior path, (images, x_hat, leaves)."""
    gens = [sample_generator(seed, i) for i in indices]
    device = next(tree_model.parameters()).device
    cond = Condition.cat([posterior_condition(tree_model, x[b:b + 1].to(device), g) for b, g in enumerate(gens)])
    return denoise(denoiser, cond, sampler_cfg, gens), cond.x_hat.cpu(), cond.leaves.cpu()
