"""In-memory image sets: uint8 pixels, integer labels, class names (NumPy only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class ImageArrays:
    """A named image set: uint8 (N, H, W, C) pixels, optional int64 (N,) labels, class names."""

    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray | None  # int64 (N,) or None
    classes: list[str] = field(default_factory=list)  # may be empty when labels is None
    name: str = "images"  # e.g. "digits/train"

    def __post_init__(self) -> None:
        self._check_images()
        if self.labels is not None:
            self.labels = self._checked_labels(self.labels)
        self.classes = [str(c) for c in self.classes]

    def _check_images(self) -> None:
        if not isinstance(self.images, np.ndarray):
            raise ValueError(f"{self.name}: images must be a numpy array, got {type(self.images).__name__}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}: images must be (N, H, W, C) with C in {{1, 3}}, "
                             f"got shape {self.images.shape}")

    def _checked_labels(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: labels must be integers, got {labels.dtype}")
        if labels.shape != (len(self.images),):
            raise ValueError(f"{self.name}: {len(self.images)} images but labels of shape {labels.shape}")
        if labels.size and labels.min() < 0:
            raise ValueError(f"{self.name}: negative label {int(labels.min())}")
        if labels.size and self.classes and labels.max() >= len(self.classes):
            raise ValueError(f"{self.name}: label {int(labels.max())} out of range for "
                             f"{len(self.classes)} classes")
        return labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageArrays:
        """The images (and labels) at `indices` (integers or a boolean mask), same classes and name."""
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64, copy=False)
        labels = None if self.labels is None else self.labels[idx]
        return ImageArrays(self.images[idx], labels, list(self.classes), self.name)
