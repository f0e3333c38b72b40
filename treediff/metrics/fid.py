"""Fréchet distance from mergeable feature statistics.

Workers each reduce their images to `FeatureStats` (count, sum f, sum f f^T in float64, as
EDM's fid.py does), the driver adds them up and turns the sum into mu and Sigma. The distance
itself is torch-fidelity's `fid_statistics_to_metric`, so the number is the one
`torch_fidelity.calculate_metrics` prints for the same features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric


@dataclass
class FeatureStats:
    """Sufficient statistics of a feature set: n, sum f (d,), sum f f^T (d, d), all float64."""

    n: int
    total: np.ndarray
    outer: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "FeatureStats":
        return cls(0, np.zeros(dim, np.float64), np.zeros((dim, dim), np.float64))

    @classmethod
    def of(cls, features: torch.Tensor | np.ndarray) -> "FeatureStats":
        f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be (N, d), got shape {f.shape}")
        if not np.isfinite(f).all():
            raise FloatingPointError("features contain NaN or inf (non-finite images?)")
        return cls(len(f), f.sum(0), f.T @ f)

    @property
    def dim(self) -> int:
        return len(self.total)

    def __add__(self, other: "FeatureStats") -> "FeatureStats":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {self.dim}-d and {other.dim}-d feature statistics")
        return FeatureStats(self.n + other.n, self.total + other.total, self.outer + other.outer)

    def mu_sigma(self) -> dict[str, np.ndarray]:
        """mu and the unbiased covariance (numpy.cov's), as torch-fidelity's statistics dict."""
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images, got {self.n}")
        mu = self.total / self.n
        sigma = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return {"mu": mu, "sigma": sigma}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        with open(tmp, "wb") as f:
            np.savez(f, n=self.n, total=self.total, outer=self.outer)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        try:
            with np.load(path) as z:
                return cls(int(z["n"]), z["total"], z["outer"])
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a feature statistics file ({e}); remove it to recompute") from e


def merge(stats: list[FeatureStats]) -> FeatureStats:
    if not stats:
        raise ValueError("no feature statistics to merge")
    out = stats[0]
    for s in stats[1:]:
        out = out + s
    return out


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two feature sets (torch-fidelity's statistics -> metric)."""
    return float(fid_statistics_to_metric(a.mu_sigma(), b.mu_sigma(), verbose=False)[KEY_METRIC_FID])
