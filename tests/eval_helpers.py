"""A tiny trained run on disk for the evaluation tests: a tree checkpoint and a diffusion
checkpoint at run_dir/diffusion/<mode>, on 8x8 grey images (the digits shape)."""
from pathlib import Path

import torch

from treediff.checkpoint import save_checkpoint
from treediff.diffusion.config import DiffusionConfig, SamplerConfig
from treediff.diffusion.trainer import train_diffusion
from treediff.vae import TreeVAE, TreeVAEConfig

class Images(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images as the data set torch-fidelity's calculate_metrics takes."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


TINY_TREE = TreeVAEConfig(latent_channels=4, bottom_up_channels=8, max_depth=3)
TINY_DIFFUSION = dict(T=50, model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4],
                      num_heads=2, dropout=0.0, lr=1e-3, warmup_steps=2, batch_size=16, steps=8, log_every=4,
                      ema_decay=0.9, cond_drop_prob=0.2)
# the same sizes as Hydra overrides, for the jobs
DIFFUSION_OVERRIDES = ["diffusion.T=50", "diffusion.model_channels=8", "diffusion.channel_mult=[1,2]",
                       "diffusion.num_res_blocks=1", "diffusion.attention_resolutions=[4]", "diffusion.num_heads=2"]


def tiny_run(run_dir: Path, modes=("path",)) -> dict[str, Path]:
    torch.manual_seed(0)
    model = TreeVAE(TINY_TREE)
    model.split(2)  # leaves 1, 5, 6
    tree = save_checkpoint(run_dir / "tree" / "phase-003-finetune", model.state_dict(), model.tree,
                           {"model": vars(TINY_TREE)}, {})
    images = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = {}
    for mode in modes:
        cfg = DiffusionConfig(**TINY_DIFFUSION, conditioning=mode)
        out[mode] = train_diffusion(tree, cfg, SamplerConfig(steps=5), images, run_dir / "diffusion" / mode,
                                    log=lambda *a: None)
    return out
