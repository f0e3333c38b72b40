"""Building blocks of the CNN-TreeVAE (reference notes, section 1.3).

Shapes: x is B x C x H x W; bottom-up features d are B x C_bu x R x R; latents z are
B x C_lat x R x R. Variances (not standard deviations) are carried throughout.
At R = 1 (flat latents, the original TreeVAE's) the latent-side 3x3 convs become linear layers
(Pointwise: on a 1 x 1 map a 3x3 conv reads only its centre tap), as in its MLPs, and the routers
read the whole feature vector.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def activation(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.3)
    raise ValueError(f"model.activation: unknown activation {name!r}")


def conv3(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class Pointwise(nn.Linear):
    """A linear layer on B x C x 1 x 1 maps: the 3x3 conv of a flat latent, whose kernel would read
    only its centre tap (a 1x1 conv computes the same, several times slower on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))[:, :, None, None]


def latent_conv(c_in: int, c_out: int, rep_dim: int, bias: bool = True) -> nn.Module:
    """The conv of the latent-side blocks: 3x3 on R x R maps, a linear layer on flat ones (R = 1)."""
    return conv3(c_in, c_out, bias=bias) if rep_dim > 1 else Pointwise(c_in, c_out, bias=bias)


def squeeze(c_in: int, rep_dim: int) -> tuple[nn.Module, int]:
    """What a router or projection reads first, and the width it flattens to: a 3x3 conv to one
    channel on R x R maps (R^2 numbers), the C_in features themselves on flat ones."""
    if rep_dim > 1:
        return conv3(c_in, 1, bias=False), rep_dim * rep_dim
    return nn.Identity(), c_in


class ResBlock(nn.Module):
    """Pre-activation residual block: three 3x3 convs, out = shortcut(x) + 0.1 * residual."""

    def __init__(self, c_in: int, c_out: int, act: str):
        super().__init__()
        hidden = min(c_in, c_out)
        self.residual = nn.Sequential(
            nn.BatchNorm2d(c_in), activation(act), conv3(c_in, c_in),
            nn.BatchNorm2d(c_in), activation(act), conv3(c_in, hidden),
            nn.BatchNorm2d(hidden), activation(act), conv3(hidden, c_out),
        )
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + 0.1 * self.residual(x)


class ConvStack(nn.Module):
    """Three [3x3 conv (no bias) -> BN -> act] with channels in -> in -> in -> out.

    The residual connection applies only when in == out (bottom-up blocks).
    """

    def __init__(self, c_in: int, c_out: int, act: str, residual: bool = False, rep_dim: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in ((c_in, c_in), (c_in, c_in), (c_in, c_out)):
            layers += [latent_conv(a, b, rep_dim, bias=False), nn.BatchNorm2d(b), activation(act)]
        self.net = nn.Sequential(*layers)
        self.residual = residual and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y + x if self.residual else y


class GaussianHead(nn.Module):
    """Two 3x3 conv heads: mean and variance = softplus(conv)."""

    def __init__(self, c_in: int, c_lat: int, rep_dim: int = 2):
        super().__init__()
        self.mu = latent_conv(c_in, c_lat, rep_dim)
        self.var = latent_conv(c_in, c_lat, rep_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), F.softplus(self.var(h))


class Transformation(nn.Module):
    """Top-down prior p(z_i | z_pa(i)): ConvStack(C_lat -> C_bu) then a Gaussian head."""

    def __init__(self, c_lat: int, c_bu: int, act: str, rep_dim: int = 2):
        super().__init__()
        self.stack = ConvStack(c_lat, c_bu, act, rep_dim=rep_dim)
        self.head = GaussianHead(c_bu, c_lat, rep_dim)

    def forward(self, z_parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.stack(z_parent))


class Router(nn.Module):
    """Decision network: conv3x3 -> 1 channel -> flatten R^2 -> 2-layer MLP -> logit of P(left).
    At R = 1 the MLP reads the C_in features themselves (the original TreeVAE's router)."""

    def __init__(self, c_in: int, rep_dim: int, hidden: int, act: str, dropout: float = 0.0):
        super().__init__()
        self.squeeze, features = squeeze(c_in, rep_dim)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, hidden, bias=False), nn.BatchNorm1d(hidden), activation(act), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), activation(act), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Returns the logit of going left, shape (B,)."""
        return self.mlp(self.squeeze(h)).squeeze(-1)


class Projection(nn.Module):
    """Contrastive projection of one bottom-up level: conv3x3 -> 1 channel -> flatten R^2 ->
    Linear(R^2 -> 128, no bias) -> BN -> act -> Linear(128 -> 10), as the reference's."""

    def __init__(self, c_in: int, rep_dim: int, act: str, hidden: int = 128, out: int = 10):
        super().__init__()
        self.squeeze, features = squeeze(c_in, rep_dim)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden, bias=False),
                                 nn.BatchNorm1d(hidden), activation(act), nn.Linear(hidden, out))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(B, C_bu, R, R) -> (B, out)."""
        return self.mlp(self.squeeze(d))
