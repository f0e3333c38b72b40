"""Registry of data sources: name -> reader of its standard on-disk (or bundled) format.

To add a format (CIFAR-10, CelebA, CUBICC, ...), write `loader(split, root) -> ImageArrays`
and add it to SOURCES.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .arrays import ImageArrays
from .bundled import load_digits
from .idx import load_mnist_format

FASHION_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
SPLITS = ("train", "test")

Loader = Callable[[str, str | None], ImageArrays]


def _digits(split: str, root: str | None) -> ImageArrays:
    """Bundled with scikit-learn; `root` is ignored."""
    return load_digits(split)


def _mnist(split: str, root: str | None) -> ImageArrays:
    if not root:
        raise ValueError("mnist: a root directory holding the MNIST idx files is required (data.root)")
    return load_mnist_format(root, split, "mnist", "mnist")


def _fashion(split: str, root: str | None) -> ImageArrays:
    root = root or FASHION_DEBIAN_ROOT
    if not Path(root).is_dir():
        raise FileNotFoundError(f"fashion_mnist: data directory not found: {root} "
                                f"(Debian ships the idx files: apt-get install dataset-fashion-mnist)")
    return load_mnist_format(root, split, "fashion_mnist", "fashion_mnist")


SOURCES: dict[str, Loader] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion_mnist": _fashion,
}


def load_source(name: str, split: str, root: str | None = None) -> ImageArrays:
    """Load split "train" or "test" of the registered data set `name` (from `root` where it needs one)."""
    if name not in SOURCES:
        raise ValueError(f"data.name: unknown data set {name!r}; known: {', '.join(sorted(SOURCES))}")
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r} (train or test)")
    return SOURCES[name](split, root)
