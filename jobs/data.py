"""Loading the configured data set for a job (bundled or on-disk formats)."""
from __future__ import annotations

from treediff.data.arrays import ImageArrays
from treediff.data.sources import load_source
from treediff.data.split import Split

from .schema import DataConfig


class _Head(Split):
    """The first n samples of a split (data.limit_train / limit_test)."""

    def __init__(self, split: Split, n: int):
        self.split, self.n = split, n
        self.name, self.classes = split.name, split.classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.split[i]

    @property
    def labelled(self) -> bool:
        return self.split.labelled


def limited(split: Split, cfg: DataConfig, name: str) -> Split:
    limit = cfg.limit_train if name == "train" else cfg.limit_test
    return _Head(split, limit) if limit and limit < len(split) else split


def load_split(cfg: DataConfig, split: str) -> ImageArrays:
    data = load_source(cfg.name, split, cfg.root)
    limit = cfg.limit_train if split == "train" else cfg.limit_test
    if limit and limit < len(data):
        data = data.subset(list(range(limit)))
    return data


def check_shape(data: ImageArrays, in_channels: int, image_size: int) -> None:
    """Images must match the encoder: say which data set and which config fields disagree."""
    n, h, w, c = data.images.shape
    if (h, w, c) != (image_size, image_size, in_channels):
        raise ValueError(
            f"data set {data.name!r} has images of {h}x{w}x{c}, but the model expects "
            f"{image_size}x{image_size}x{in_channels} (model.image_size={image_size}, "
            f"model.in_channels={in_channels}); choose a model preset for this data set")
