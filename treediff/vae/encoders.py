"""Encoders (x -> d_0) and leaf decoders (z_leaf -> x_hat) of the CNN-TreeVAE.

cnn1: three plain convs whose kernel and stride are solved so that the spatial size walks
      linearly from H down to R (the reference's small grey-scale network).
cnn2: a residual network halving the resolution log2(H / R) times (colour data).
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


def make_encoder(cfg: TreeVAEConfig) -> nn.Module:
    return {"cnn1": Cnn1Encoder, "cnn2": Cnn2Encoder}[cfg.encoder](cfg)


def make_decoder(cfg: TreeVAEConfig) -> nn.Module:
    """A leaf decoder; it outputs logits (bernoulli) or the image in [-1, 1] units (gaussian)."""
    return {"cnn1": Cnn1Decoder, "cnn2": Cnn2Decoder}[cfg.encoder](cfg)
