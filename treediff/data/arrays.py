"""In-memory image sets: uint8 pixels, integer labels, class names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class ImageArrays:
    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray | None  # int64 (N,) or None
    classes: list[str] = field(default_factory=list)
    name: str = "images"

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}: images must be (N, H, W, C) with C in {{1, 3}}, got {self.images.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (len(self.images),):
                raise ValueError(f"{self.name}: {len(self.images)} images but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageArrays":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageArrays(self.images[idx], None if self.labels is None else self.labels[idx], list(self.classes),
                           self.name)
