"""One split of a data set as a random-access sequence of samples (key, uint8 image, label).

Readers of the on-disk formats return a `Split`: either an `ArraySplit` (the whole split in
memory: idx, CIFAR-10 batches, CUBICC tensors, bundled digits) or a `FileSplit` (one file per
image, decoded on access: CelebA, image folders). `treediff prepare` walks a Split in a
shuffled order to write shards; `to_arrays` materialises a small split for in-memory jobs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .arrays import ImageArrays


@dataclass(frozen=True)
class Sample:
    key: str  # unique within the split, stable across runs (file stem or index)
    image: np.ndarray  # uint8 (H, W, C), C in {1, 3}
    label: int | None  # class index into Split.classes, or None for unlabelled data


class Split:
    """A split: `len(split)`, `split[i] -> Sample`, `split.classes`, `split.name` ("cifar10/train")."""

    name: str
    classes: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        raise NotImplementedError

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def labelled(self) -> bool:
        raise NotImplementedError


class ArraySplit(Split):
    """A split held in memory as ImageArrays; keys are the zero-padded indices unless given."""

    def __init__(self, arrays: ImageArrays, keys: Sequence[str] | None = None):
        self.arrays = arrays
        self.name, self.classes = arrays.name, list(arrays.classes)
        if keys is not None and len(keys) != len(arrays):
            raise ValueError(f"{arrays.name}: {len(keys)} keys for {len(arrays)} images")
        self.keys = list(keys) if keys is not None else [f"{i:07d}" for i in range(len(arrays))]

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> Sample:
        label = None if self.arrays.labels is None else int(self.arrays.labels[i])
        return Sample(self.keys[i], self.arrays.images[i], label)

    @property
    def labelled(self) -> bool:
        return self.arrays.labels is not None


class FileSplit(Split):
    """One image file per sample, decoded by `load(path) -> uint8 (H, W, C)` on access."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, classes: Sequence[str], name: str,
                 load: Callable[[Path], np.ndarray], keys: Sequence[str] | None = None):
        self.paths = [Path(p) for p in paths]
        self.labels = None if labels is None else [int(l) for l in labels]
        if self.labels is not None and len(self.labels) != len(self.paths):
            raise ValueError(f"{name}: {len(self.labels)} labels for {len(self.paths)} files")
        self.classes, self.name, self.load = [str(c) for c in classes], name, load
        self.keys = list(keys) if keys is not None else [p.stem for p in self.paths]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"{name}: sample keys are not unique (pass explicit keys)")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Sample:
        path = self.paths[i]
        try:
            image = self.load(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.name}: cannot read image {path}: {e}") from e
        return Sample(self.keys[i], image, None if self.labels is None else self.labels[i])

    @property
    def labelled(self) -> bool:
        return self.labels is not None


class _Head(Split):
    """The first n samples of a per-file split."""

    def __init__(self, split: Split, n: int):
        self.split, self.n = split, n
        self.name, self.classes = split.name, split.classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.split[i]

    @property
    def labelled(self) -> bool:
        return self.split.labelled


def head(split: Split, n: int) -> Split:
    """The first n samples (all when n >= len); an in-memory split stays in memory."""
    if n >= len(split):
        return split
    if isinstance(split, ArraySplit):
        return ArraySplit(split.arrays.subset(list(range(n))), split.keys[:n])
    return _Head(split, n)


def square(image: np.ndarray, size: int = 0, channels: int = 0) -> np.ndarray:
    """uint8 (H, W, C) -> (size, size, channels): the centred square crop resized with PIL's
    antialiased bicubic filter (size 0: as it is), converted to grey or RGB (channels 1 / 3; 0: as it is)."""
    from PIL import Image

    im = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    if channels:
        im = im.convert("L" if channels == 1 else "RGB")
    if size:
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(im, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


class _Squared(Split):
    """Every image of a split through `square` (on access)."""

    def __init__(self, split: Split, size: int, channels: int):
        self.split, self.size, self.channels = split, size, channels
        self.name, self.classes = split.name, split.classes

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Sample:
        s = self.split[i]
        return Sample(s.key, square(s.image, self.size, self.channels), s.label)

    @property
    def labelled(self) -> bool:
        return self.split.labelled


def resized(split: Split, size: int = 0, channels: int = 0) -> Split:
    """The split with square images of `size` and `channels` (see `square`); unchanged when both are 0."""
    if size < 0 or channels not in (0, 1, 3):
        raise ValueError(f"resized: size must be >= 0 and channels 0, 1 or 3, got {size}, {channels}")
    return _Squared(split, size, channels) if size or channels else split


def to_arrays(split: Split) -> ImageArrays:
    """The whole split in memory (all images must share one shape)."""
    if isinstance(split, ArraySplit):
        return split.arrays
    samples = list(split)
    shapes = {s.image.shape for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"{split.name}: images of different shapes {sorted(shapes)}; set data.image_size to "
                         f"crop and resize them to one square size")
    images = np.stack([s.image for s in samples]) if samples else np.zeros((0, 1, 1, 1), np.uint8)
    labels = np.array([s.label for s in samples], np.int64) if split.labelled else None
    return ImageArrays(images, labels, list(split.classes), split.name)
