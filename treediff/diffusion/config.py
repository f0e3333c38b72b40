"""Configuration of the diffusion second stage and of its sampler (plain dataclasses).

jobs/ registers these in Hydra's ConfigStore; treediff/ itself never imports hydra.
Every check raises ValueError naming the offending field (`diffusion.<field>`, `sampler.<field>`).

Conditioning modes (reference notes, sections 3.2 and 3.3):
  path        TreeDiffusion: the path encoding y_l added to the U-Net's time embedding
  recon       Diffuse-TreeVAE: the frozen tree's leaf reconstruction x_hat concatenated to x_t
  recon_path  both
  none        unconditional U-Net (with `leaf_embedding`: conditioned on the leaf id only)
`leaf_embedding` adds Diffuse-TreeVAE's optional learned leaf-id embedding to any mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULES = ("linear", "cosine")
CONDITIONINGS = ("path", "recon", "recon_path", "none")
METHODS = ("ddim", "ddpm")
SPACINGS = ("uniform", "quad")
VARIANCES = ("fixedlarge", "fixedsmall")


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{field_name}: {msg}")


@dataclass
class DiffusionConfig:
    """The denoiser (U-Net + conditioning) and its training on top of a frozen tree."""

    # forward process
    schedule: str = "linear"
    T: int = 1000
    beta_1: float = 1e-4  # linear schedule only
    beta_T: float = 0.02
    # conditioning
    conditioning: str = "path"
    leaf_embedding: bool = False
    cond_drop_prob: float = 0.0  # classifier-free guidance: drop each sample's condition with this prob
    # U-Net
    model_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=list)  # feature-map sizes in pixels
    num_heads: int = 8
    dropout: float = 0.1
    pad_to: int = 0  # > 0: zero-pad the input to pad_to x pad_to inside the U-Net (28 -> 32)
    # optimisation
    lr: float = 2e-4
    weight_decay: float = 0.0  # AdamW; 0 is the reference's Adam
    warmup_steps: int = 5000  # linear learning-rate warm-up, then constant
    grad_clip: float = 1.0  # max grad norm; 0: no clipping
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # decay min(ema_decay, (1+n)/(10+n)): useful for short runs
    batch_size: int = 256
    steps: int = 10000  # optimizer steps
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 0  # > 0: keep a resumable progress checkpoint every this many steps

    def __post_init__(self) -> None:
        self.channel_mult = [int(m) for m in self.channel_mult]
        self.attention_resolutions = [int(r) for r in self.attention_resolutions]
        _check(self.schedule in SCHEDULES, "diffusion.schedule", f"must be one of {SCHEDULES}, got {self.schedule!r}")
        _check(self.T >= 1, "diffusion.T", f"must be >= 1, got {self.T}")
        _check(0.0 < self.beta_1 < 1.0, "diffusion.beta_1", f"must be in (0, 1), got {self.beta_1}")
        _check(self.beta_1 <= self.beta_T < 1.0, "diffusion.beta_T",
               f"must be in [diffusion.beta_1={self.beta_1}, 1), got {self.beta_T}")
        _check(self.conditioning in CONDITIONINGS, "diffusion.conditioning",
               f"must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        _check(0.0 <= self.cond_drop_prob < 1.0, "diffusion.cond_drop_prob",
               f"must be in [0, 1), got {self.cond_drop_prob}")
        for name in ("model_channels", "num_res_blocks", "num_heads", "batch_size", "steps", "log_every"):
            _check(getattr(self, name) >= 1, f"diffusion.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(len(self.channel_mult) >= 1 and all(m >= 1 for m in self.channel_mult), "diffusion.channel_mult",
               f"must be a non-empty list of positive ints, got {self.channel_mult}")
        _check(all(r >= 1 for r in self.attention_resolutions), "diffusion.attention_resolutions",
               f"must be positive pixel sizes, got {self.attention_resolutions}")
        _check(0.0 <= self.dropout < 1.0, "diffusion.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.pad_to >= 0, "diffusion.pad_to", f"must be >= 0, got {self.pad_to}")
        _check(self.lr > 0, "diffusion.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "diffusion.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, "diffusion.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.grad_clip >= 0, "diffusion.grad_clip", f"must be >= 0 (0: no clipping), got {self.grad_clip}")
        _check(0.0 <= self.ema_decay < 1.0, "diffusion.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        _check(self.checkpoint_every >= 0, "diffusion.checkpoint_every",
               f"must be >= 0 (0: never), got {self.checkpoint_every}")

    @property
    def uses_path(self) -> bool:
        return self.conditioning in ("path", "recon_path")

    @property
    def uses_recon(self) -> bool:
        return self.conditioning in ("recon", "recon_path")

    @property
    def conditional(self) -> bool:
        return self.uses_path or self.uses_recon or self.leaf_embedding

    @property
    def mode_name(self) -> str:
        """Directory name of this variant: the conditioning, `-leaf` when the leaf embedding is on."""
        return self.conditioning + ("-leaf" if self.leaf_embedding else "")

    def unet_config(self, image_size: int, in_channels: int):
        """The U-Net's config for images of this size; errors name the diffusion.* field."""
        from .unet import UNetConfig

        cond_dim = 4 * self.model_channels if (self.uses_path or self.leaf_embedding) else 0
        try:
            return UNetConfig(image_size=image_size, in_channels=in_channels, out_channels=in_channels,
                              model_channels=self.model_channels, channel_mult=tuple(self.channel_mult),
                              num_res_blocks=self.num_res_blocks,
                              attention_resolutions=tuple(self.attention_resolutions), num_heads=self.num_heads,
                              dropout=self.dropout, extra_in_channels=in_channels if self.uses_recon else 0,
                              cond_dim=cond_dim, pad_to=self.pad_to)
        except ValueError as e:
            msg = str(e).replace("unet.image_size=", "image size ").replace("unet.image_size", "diffusion.pad_to")
            raise ValueError(msg.replace("unet.", "diffusion.")) from e


@dataclass
class SamplerConfig:
    """How samples are drawn from a trained denoiser."""

    method: str = "ddim"
    steps: int = 50  # DDIM steps (<= diffusion.T); DDPM always runs all T steps
    eta: float = 0.0  # DDIM stochasticity (0: deterministic)
    spacing: str = "uniform"
    variance: str = "fixedlarge"  # DDPM only
    w: float = 1.0  # classifier-free guidance weight: 0 unconditional, 1 conditional, > 1 guided
    samples_per_leaf: int = 8
    clip_x0: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.method in METHODS, "sampler.method", f"must be one of {METHODS}, got {self.method!r}")
        _check(self.steps >= 1, "sampler.steps", f"must be >= 1, got {self.steps}")
        _check(self.eta >= 0, "sampler.eta", f"must be >= 0, got {self.eta}")
        _check(self.spacing in SPACINGS, "sampler.spacing", f"must be one of {SPACINGS}, got {self.spacing!r}")
        _check(self.variance in VARIANCES, "sampler.variance",
               f"must be one of {VARIANCES}, got {self.variance!r}")
        _check(self.w >= 0, "sampler.w", f"must be >= 0, got {self.w}")
        _check(self.samples_per_leaf >= 1, "sampler.samples_per_leaf", f"must be >= 1, got {self.samples_per_leaf}")

    def check_against(self, diffusion: DiffusionConfig) -> None:
        """Cross-checks with the diffusion config (the sampler alone does not know T)."""
        _check(self.steps <= diffusion.T, "sampler.steps", f"must be <= diffusion.T={diffusion.T}, got {self.steps}")
