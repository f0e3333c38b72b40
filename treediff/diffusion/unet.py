"""Denoising U-Net in the style of improved-diffusion (reference notes, section 3.1).

Input conv; per level `num_res_blocks` ResBlocks (optionally followed by self-attention) and a
strided-conv downsample; middle block ResBlock-Attention-ResBlock; mirrored decoder with skip
concatenations and nearest+conv upsampling; GroupNorm-SiLU-zero-init conv output.

Conditioning enters in two ways:
* a vector `cond` is added to the time embedding (TreeDiffusion's path signal y_l, or a leaf
  embedding), which every ResBlock reads through scale-shift norm:
  h = GroupNorm(h) * (1 + scale) + shift, [scale, shift] = Linear(SiLU(emb));
* an image `extra` is concatenated channel-wise to x_t (DiffuseVAE formulation 1: the TreeVAE
  reconstruction x_hat).
`cond=None` / `extra=None` mean the null conditioning, i.e. exactly zeros; this is the same
input a sample gets when classifier-free guidance drops its conditioning
(`treediff.diffusion.model.Condition.drop`).

Deviation from the reference: `attention_resolutions` are feature-map sizes in **pixels**
(after `pad_to` padding), not downsample factors; see UNetConfig.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{field_name}: {msg}")


@dataclass
class UNetConfig:
    image_size: int
    in_channels: int
    out_channels: int
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    # Feature-map sizes (pixels, measured on the padded input) whose level gets attention after
    # every ResBlock. The middle block always has attention.
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 4
    dropout: float = 0.1
    extra_in_channels: int = 0  # channels of an image concatenated to x_t (0: none)
    # Width of the conditioning vector `cond` (0: none). Equal to emb_dim (4 * model_channels):
    # added to the time embedding as is; otherwise projected by a bias-free Linear first.
    cond_dim: int = 0
    pad_to: int = 0  # > 0: zero-pad inputs to pad_to x pad_to inside the net, crop the output

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        for name in ("image_size", "in_channels", "out_channels", "model_channels", "num_res_blocks", "num_heads"):
            _check(getattr(self, name) >= 1, f"unet.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("extra_in_channels", "cond_dim", "pad_to"):
            _check(getattr(self, name) >= 0, f"unet.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(len(self.channel_mult) >= 1 and all(m >= 1 for m in self.channel_mult), "unet.channel_mult",
               f"must be a non-empty list of positive ints, got {list(self.channel_mult)}")
        _check(0.0 <= self.dropout < 1.0, "unet.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.pad_to == 0 or self.pad_to >= self.image_size, "unet.pad_to",
               f"must be 0 or >= unet.image_size={self.image_size}, got {self.pad_to}")
        size, factor = self.internal_size, 2 ** (len(self.channel_mult) - 1)
        _check(size % factor == 0, "unet.image_size" if self.pad_to == 0 else "unet.pad_to",
               f"the internal size {size} must be divisible by 2^(levels-1) = {factor} "
               f"for {len(self.channel_mult)} levels (unet.channel_mult); set unet.pad_to to pad the input")
        available = self.resolutions
        bad = [r for r in self.attention_resolutions if r not in available]
        _check(not bad, "unet.attention_resolutions",
               f"{bad} match no level; available resolutions (pixels) are {list(available)}")
        for level, mult in enumerate(self.channel_mult):
            ch = self.model_channels * mult
            needs_attn = available[level] in self.attention_resolutions or level == len(self.channel_mult) - 1
            _check(not needs_attn or ch % self.num_heads == 0, "unet.num_heads",
                   f"must divide the {ch} channels of every level with attention, got {self.num_heads}")

    @property
    def internal_size(self) -> int:
        return self.pad_to or self.image_size

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size (pixels) of each level."""
        return tuple(self.internal_size >> level for level in range(len(self.channel_mult)))

    @property
    def emb_dim(self) -> int:
        return 4 * self.model_channels


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): [cos(t * f_k), sin(t * f_k)], f_k = max_period^(-k / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= 32 that divides `channels`."""
    groups = next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.out_norm = group_norm(out_ch)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the spatial positions, residual, zero-init projection."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return (flat + self.proj(out)).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """Sequential that hands the embedding to the ResBlocks it contains."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc, emb_dim = cfg.model_channels, cfg.emb_dim
        self.emb_dim = emb_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj: nn.Module | None = None
        if cfg.cond_dim and cfg.cond_dim != emb_dim:
            self.cond_proj = nn.Linear(cfg.cond_dim, emb_dim, bias=False)  # bias-free: zeros stay zeros

        levels = len(cfg.channel_mult)
        res = cfg.resolutions
        attn = lambda level: res[level] in cfg.attention_resolutions  # noqa: E731

        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(
            nn.Conv2d(cfg.in_channels + cfg.extra_in_channels, ch, 3, padding=1))])
        skips = [ch]
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mc * mult, emb_dim, cfg.dropout)]
                ch = mc * mult
                if attn(level):
                    layers.append(AttentionBlock(ch, cfg.num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != levels - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                skips.append(ch)

        self.middle_block = EmbedSequential(ResBlock(ch, ch, emb_dim, cfg.dropout), AttentionBlock(ch, cfg.num_heads),
                                            ResBlock(ch, ch, emb_dim, cfg.dropout))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mc * mult, emb_dim, cfg.dropout)]
                ch = mc * mult
                if attn(level):
                    layers.append(AttentionBlock(ch, cfg.num_heads))
                if level != 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        total = self.cfg.internal_size - self.cfg.image_size
        if total == 0:
            return x
        lo = total // 2
        return F.pad(x, (lo, total - lo, lo, total - lo))

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        total = self.cfg.internal_size - self.cfg.image_size
        if total == 0:
            return x
        lo = total // 2
        return x[..., lo:lo + self.cfg.image_size, lo:lo + self.cfg.image_size]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, S, S), t (B,) integer timesteps; returns (B, out_channels, S, S).

        cond: (B, cond_dim) vector added to the time embedding; extra: (B, extra_in_channels, S, S)
        image concatenated to x. None means the null conditioning (zeros).
        """
        cfg = self.cfg
        b = x.shape[0]
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"UNet input x has shape {tuple(x.shape)}, expected (B, {', '.join(map(str, expected))})")
        if t.shape != (b,):
            raise ValueError(f"UNet timesteps t must have shape ({b},), got {tuple(t.shape)}")

        emb = self.time_embed(timestep_embedding(t, cfg.model_channels).to(x.dtype))
        if cond is not None:
            if cfg.cond_dim == 0:
                raise ValueError("UNet got a conditioning vector but unet.cond_dim=0")
            if cond.shape != (b, cfg.cond_dim):
                raise ValueError(f"UNet cond has shape {tuple(cond.shape)}, expected ({b}, {cfg.cond_dim}) (unet.cond_dim)")
            emb = emb + (self.cond_proj(cond) if self.cond_proj is not None else cond)

        if cfg.extra_in_channels:
            if extra is None:
                extra = x.new_zeros(b, cfg.extra_in_channels, cfg.image_size, cfg.image_size)
            expected_extra = (b, cfg.extra_in_channels, cfg.image_size, cfg.image_size)
            if tuple(extra.shape) != expected_extra:
                raise ValueError(f"UNet extra has shape {tuple(extra.shape)}, expected {expected_extra} "
                                 f"(unet.extra_in_channels)")
            x = torch.cat([x, extra.to(x.dtype)], dim=1)
        elif extra is not None:
            raise ValueError("UNet got an extra conditioning image but unet.extra_in_channels=0")

        h = self._pad(x)
        hs = []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self._crop(self.out(h))
