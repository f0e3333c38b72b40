"""Data sets that ship inside installed packages (no download): the embedded default."""
from __future__ import annotations

import numpy as np

from .arrays import ImageArrays


def load_digits(split: str, test_fraction: float = 0.2, seed: int = 0) -> ImageArrays:
    """scikit-learn's digits (UCI optdigits): 1,797 images of 8x8, 17 grey levels -> uint8."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits: unknown split {split!r} (train or test)")
    d = sk_digits()
    images = np.rint(d.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    idx = np.arange(len(images))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=d.target, random_state=seed)
    pick = np.sort(train if split == "train" else test)
    return ImageArrays(images[pick], d.target[pick].astype(np.int64), [str(i) for i in range(10)], f"digits/{split}")
