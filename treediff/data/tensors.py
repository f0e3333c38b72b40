"""uint8 images <-> float tensors in [-1, 1] (the models' convention)."""
from __future__ import annotations

import numpy as np
import torch


def to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    t = torch.as_tensor(np.require(images, requirements="W"))  # read-only arrays (e.g. from Ray) are copied
    if t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {t.dtype}")
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, C, H, W), clamped then rounded."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
