"""Registry of data sources: name -> reader of its standard on-disk (or bundled) format."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .arrays import ImageArrays
from .bundled import load_digits
from .idx import FASHION_CLASSES, MNIST_CLASSES, load_mnist_format

FASHION_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"


def _digits(split: str, root: str | None) -> ImageArrays:
    return load_digits(split)


def _mnist(split: str, root: str | None) -> ImageArrays:
    if not root:
        raise ValueError("mnist: data.root must name the directory holding the MNIST idx files")
    return load_mnist_format(root, split, MNIST_CLASSES, "mnist")


def _fashion(split: str, root: str | None) -> ImageArrays:
    root = root or FASHION_DEBIAN_ROOT
    if not Path(root).is_dir():
        raise FileNotFoundError(f"fashion_mnist: data directory not found: {root} "
                                f"(Debian ships the idx files: apt-get install dataset-fashion-mnist)")
    return load_mnist_format(root, split, FASHION_CLASSES, "fashion_mnist")


SOURCES: dict[str, Callable[[str, str | None], ImageArrays]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion_mnist": _fashion,
}


def load_source(name: str, split: str, root: str | None = None) -> ImageArrays:
    if name not in SOURCES:
        raise ValueError(f"data.name: unknown data set {name!r}; known: {', '.join(sorted(SOURCES))}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} (train or test)")
    return SOURCES[name](split, root)
