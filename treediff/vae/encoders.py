"""Encoders (x -> d_0) and leaf decoders (z_leaf -> x_hat) of the CNN-TreeVAE.

cnn1: three plain convs whose kernel and stride are solved so that the spatial size walks
      linearly from H down to R (the reference's small grey-scale network).
cnn2: a residual network halving the resolution log2(H / R) times (colour data).
flat: the original TreeVAE's small grey network (reference notes, section 1.7), for flat latents
      (R = 1) of 28 x 28 images: three 3x3 stride-2 convs, 28 -> 13 -> 6 -> 2, flattened to C_bu
      features; each leaf decodes with Linear -> 32 x 3 x 3 and three stride-2 transposed convs.
      A leaf decoder takes about a tenth of the multiply-adds of cnn1's at 28 x 28.
mlp:  the original TreeVAE's dense network, for flat latents of any image size: the pixels through
      Linear layers of 4 C_bu, 4 C_bu, 2 C_bu, C_bu; each leaf decodes through 128, 256, 512, 512.
"""
from __future__ import annotations

import math

import numpy as np
from torch import nn

from .blocks import ResBlock, activation, conv3
from .config import TreeVAEConfig


def _linspace_int(a: int, b: int, n: int) -> list[int]:
    return [int(v) for v in np.linspace(a, b, n)]


def cnn1_geometry(size_in: int, size_out: int) -> list[tuple[int, int, int, int]]:
    """(size_from, size_to, kernel, stride) of the 3 convs, padding 1 each.

    stride = from // to and kernel = from + 2 - stride * (to - 1), so that
    floor((from + 2 - kernel) / stride) + 1 == to; a transposed conv with the same
    kernel and stride maps `to` back to `from`.
    """
    sizes = _linspace_int(size_in, size_out, 4)
    out = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        s = max(1, a // b)
        k = a + 2 - s * (b - 1)
        if k < 1:
            raise ValueError(f"model.representation_dim: cannot map {a} -> {b} with one conv")
        out.append((a, b, k, s))
    return out


class Cnn1Encoder(nn.Module):
    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        chans = _linspace_int(cfg.in_channels, cfg.bottom_up_channels, 4)
        layers: list[nn.Module] = []
        for (c_a, c_b), (_, _, k, s) in zip(zip(chans[:-1], chans[1:]),
                                            cnn1_geometry(cfg.image_size, cfg.representation_dim)):
            layers += [nn.Conv2d(c_a, c_b, k, stride=s, padding=1, bias=False), nn.BatchNorm2d(c_b),
                       activation(cfg.activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Cnn1Decoder(nn.Module):
    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        chans = _linspace_int(cfg.latent_channels, cfg.in_channels, 4)
        geometry = cnn1_geometry(cfg.image_size, cfg.representation_dim)[::-1]
        layers: list[nn.Module] = []
        for i, ((c_a, c_b), (_, _, k, s)) in enumerate(zip(zip(chans[:-1], chans[1:]), geometry)):
            last = i == len(geometry) - 1
            layers.append(nn.ConvTranspose2d(c_a, c_b, k, stride=s, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(c_b), activation(cfg.activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class Cnn2Encoder(nn.Module):
    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        n = int(math.log2(cfg.image_size // cfg.representation_dim))
        chans = _linspace_int(8, cfg.bottom_up_channels, n + 1)
        layers: list[nn.Module] = [conv3(cfg.in_channels, 8), ResBlock(8, 8, cfg.activation)]
        for c_a, c_b in zip(chans[:-1], chans[1:]):
            layers += [conv3(c_a, c_a, stride=2), ResBlock(c_a, c_b, cfg.activation)]
        layers += [nn.BatchNorm2d(chans[-1]), activation(cfg.activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Cnn2Decoder(nn.Module):
    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        n = int(math.log2(cfg.image_size // cfg.representation_dim))
        chans = _linspace_int(cfg.latent_channels, 8, n + 1)
        layers: list[nn.Module] = []
        for c_a, c_b in zip(chans[:-1], chans[1:]):
            layers += [ResBlock(c_a, c_b, cfg.activation), nn.ConvTranspose2d(c_b, c_b, 4, stride=2, padding=1)]
        layers += [ResBlock(8, 8, cfg.activation), nn.BatchNorm2d(8), activation(cfg.activation),
                   conv3(8, cfg.in_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


def _dense(sizes: list[int], act: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), activation(act)]
    return layers


class FlatEncoder(nn.Module):
    """x (B, C, 28, 28) -> d_0 (B, C_bu, 1, 1): C_bu/16 -> C_bu/8 -> C_bu/4 channels on 13, 6, 2."""

    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        chans = [cfg.in_channels] + [cfg.bottom_up_channels // f for f in (16, 8, 4)]
        layers: list[nn.Module] = []
        for c_a, c_b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_a, c_b, 3, stride=2, bias=False), nn.BatchNorm2d(c_b), activation(cfg.activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten(1)[:, :, None, None]


class FlatDecoder(nn.Module):
    """z (B, C_lat, 1, 1) -> (B, C, 28, 28): Linear -> 32 x 3 x 3 -> 16 x 7 x 7 -> 8 x 14 x 14 -> C x 28 x 28."""

    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        act = cfg.activation
        self.dense = nn.Sequential(nn.Flatten(), *_dense([cfg.latent_channels, 32 * 3 * 3], act),
                                   nn.Unflatten(1, (32, 3, 3)))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), activation(act),
            nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, bias=False), nn.BatchNorm2d(8),
            activation(act),
            nn.ConvTranspose2d(8, cfg.in_channels, 3, stride=2, padding=1, output_padding=1))

    def forward(self, z):
        return self.net(self.dense(z))


class MlpEncoder(nn.Module):
    """x (B, C, H, W) -> d_0 (B, C_bu, 1, 1) through 4 C_bu, 4 C_bu, 2 C_bu, C_bu features."""

    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        e = cfg.bottom_up_channels
        pixels = cfg.in_channels * cfg.image_size ** 2
        self.net = nn.Sequential(nn.Flatten(), *_dense([pixels, 4 * e, 4 * e, 2 * e, e], cfg.activation))

    def forward(self, x):
        return self.net(x)[:, :, None, None]


class MlpDecoder(nn.Module):
    """z (B, C_lat, 1, 1) -> (B, C, H, W) through 128, 256, 512, 512 features."""

    def __init__(self, cfg: TreeVAEConfig):
        super().__init__()
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        self.net = nn.Sequential(nn.Flatten(), *_dense([cfg.latent_channels, 128, 256, 512, 512], cfg.activation),
                                 nn.Linear(512, shape[0] * shape[1] * shape[2]), nn.Unflatten(1, shape))

    def forward(self, z):
        return self.net(z)


def make_encoder(cfg: TreeVAEConfig) -> nn.Module:
    return {"cnn1": Cnn1Encoder, "cnn2": Cnn2Encoder, "flat": FlatEncoder, "mlp": MlpEncoder}[cfg.encoder](cfg)


def make_decoder(cfg: TreeVAEConfig) -> nn.Module:
    """A leaf decoder; it outputs logits (bernoulli) or the image in [-1, 1] units (gaussian)."""
    return {"cnn1": Cnn1Decoder, "cnn2": Cnn2Decoder, "flat": FlatDecoder, "mlp": MlpDecoder}[cfg.encoder](cfg)
