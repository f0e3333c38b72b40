"""The purity classifier: a small CNN trained on the labelled training split (as a Stage, so the
same runtime trains it: Ray Train + DeepSpeed workers, or one process).

Saved as a treediff checkpoint directory (weights + config.json with its shape and test accuracy).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CONFIG, WEIGHTS, move_into_place
from ..stages.base import Batch, Stage


class SmallCNN(nn.Module):
    """conv(32)-conv(64)-pool-conv(128)-global pool-linear; any image size >= 4."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.arch = {"in_channels": in_channels, "n_classes": n_classes, "width": width}
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, H, W) in [-1, 1] -> logits (B, K)
        return self.head(self.features(x))


@dataclass
class ClassifierStage(Stage):
    in_channels: int
    n_classes: int
    epochs: int = 5
    lr: float = 1e-3
    width: int = 32
    name: str = "classifier"

    def build(self) -> SmallCNN:
        return SmallCNN(self.in_channels, self.n_classes, self.width)

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, foreach=True)

    def loss(self, forward: Callable[..., Any], batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        x, y = batch[0], batch[1]
        logits = forward(x)
        loss = F.cross_entropy(logits, y.long())
        return loss, {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}


@torch.no_grad()
def predict(model: SmallCNN, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes (N,) of images x (N, C, H, W) in [-1, 1]."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def save_classifier(path: str | Path, model: SmallCNN, info: dict[str, Any]) -> Path:
    """Write `path/` (model.pt, config.json with the architecture and `info`) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        torch.save(model.state_dict(), tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps({"arch": model.arch, **info}, indent=2))
        move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def classifier_info(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / CONFIG).read_text())


def load_classifier(path: str | Path, device: str = "cpu") -> SmallCNN:
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"purity classifier {path} not found or incomplete (`treediff evaluate` trains it)")
    model = SmallCNN(**classifier_info(path)["arch"]).to(device)
    try:
        model.load_state_dict(torch.load(path / WEIGHTS, map_location=device, weights_only=True), strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise ValueError(f"purity classifier {path / WEIGHTS} cannot be loaded: {e}") from e
    return model.eval()
