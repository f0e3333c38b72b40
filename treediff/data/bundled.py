"""Data sets that ship inside installed packages (no download): the embedded default."""
from __future__ import annotations

import numpy as np

from .arrays import ImageArrays

DIGITS_CLASSES = [str(i) for i in range(10)]


def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 8, 8, 1) (17 grey levels 0..16 -> 0..255) and int64 labels."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.rint(d.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int64)


def load_digits(split: str, test_fraction: float = 0.2, seed: int = 0) -> ImageArrays:
    """scikit-learn's digits (UCI optdigits), with a deterministic stratified train/test split."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits: unknown split {split!r} (train or test)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _digits_uint8()
    train, test = train_test_split(np.arange(len(images)), test_size=test_fraction, stratify=labels,
                                   random_state=seed)
    pick = np.sort(train if split == "train" else test)
    return ImageArrays(images[pick], labels[pick], list(DIGITS_CLASSES), f"digits/{split}")
