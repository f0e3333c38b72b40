"""Registry of data sources: name -> reader of its standard on-disk (or bundled) format.

A reader is `open(split, root) -> Split` (treediff.data.split): a random-access sequence of
(key, uint8 image, label). To add a format, write one and add it to SOURCES.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .arrays import ImageArrays
from .bundled import load_digits, load_photo_patches
from .celeba import IMAGE_SIZE as CELEBA_SIZE, open_celeba
from .cifar import open_cifar10
from .cubicc import open_cubicc
from .folder import open_folder
from .idx import load_mnist_format
from .split import ArraySplit, Split, to_arrays

FASHION_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
SPLITS = ("train", "test")

Opener = Callable[[str, str | None], Split]


def _digits(split: str, root: str | None) -> Split:
    """Bundled with scikit-learn; `root` is ignored."""
    return ArraySplit(load_digits(split))


def _photo_patches(split: str, root: str | None) -> Split:
    """Built from photos that scikit-image and scikit-learn ship; `root` is ignored."""
    return ArraySplit(load_photo_patches(split))


def _mnist(split: str, root: str | None) -> Split:
    if not root:
        raise ValueError("mnist: a root directory holding the MNIST idx files is required (data.root)")
    return ArraySplit(load_mnist_format(root, split, "mnist", "mnist"))


def _fashion(split: str, root: str | None) -> Split:
    root = root or FASHION_DEBIAN_ROOT
    if not Path(root).is_dir():
        raise FileNotFoundError(f"fashion_mnist: data directory not found: {root} "
                                f"(Debian ships the idx files: apt-get install dataset-fashion-mnist)")
    return ArraySplit(load_mnist_format(root, split, "fashion_mnist", "fashion_mnist"))


def _rooted(name: str, what: str, root: str | None) -> str:
    if not root:
        raise ValueError(f"{name}: a root directory holding {what} is required (data.root)")
    return root


def _cifar10(split: str, root: str | None) -> Split:
    return open_cifar10(_rooted("cifar10", "cifar-10-batches-py (the python version)", root), split)


def _celeba(split: str, root: str | None) -> Split:
    return open_celeba(_rooted("celeba", "img_align_celeba/ and list_eval_partition.txt", root), split)


def _cubicc(split: str, root: str | None) -> Split:
    return open_cubicc(_rooted("cubicc", "images.pt, labels.pt and the *_split.npy files", root), split)


def _folder(split: str, root: str | None) -> Split:
    return open_folder(_rooted("folder", "<split>/<class>/<images>", root), split, "RGB")


SOURCES: dict[str, Opener] = {
    "digits": _digits,
    "photo_patches": _photo_patches,
    "mnist": _mnist,
    "fashion_mnist": _fashion,
    "cifar10": _cifar10,
    "celeba": _celeba,
    "cubicc": _cubicc,
    "folder": _folder,
}


# Image (size, channels) each reader yields, known without reading data (`treediff check` compares
# them with the model); None: whatever the files hold (cubicc's packing, folders), checked on load.
SHAPES: dict[str, tuple[int, int] | None] = {
    "digits": (8, 1),
    "photo_patches": (32, 3),
    "mnist": (28, 1),
    "fashion_mnist": (28, 1),
    "cifar10": (32, 3),
    "celeba": (CELEBA_SIZE, 3),
    "cubicc": None,
    "folder": None,
}


def check_name(name: str) -> None:
    if name not in SOURCES:
        raise ValueError(f"data.name: unknown data set {name!r}; known: {', '.join(sorted(SOURCES))}")


def open_source(name: str, split: str, root: str | None = None) -> Split:
    """Split "train" or "test" of the registered data set `name` (from `root` where it needs one)."""
    check_name(name)
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r} (train or test)")
    return SOURCES[name](split, root)


def load_source(name: str, split: str, root: str | None = None) -> ImageArrays:
    """The whole split in memory (for small data sets and in-memory jobs)."""
    return to_arrays(open_source(name, split, root))
