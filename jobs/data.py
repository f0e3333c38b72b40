"""Loading the configured data set for a job (bundled or on-disk formats)."""
from __future__ import annotations

from treediff.data.arrays import ImageArrays
from treediff.data.sources import open_source
from treediff.data.split import Split, head, resized, to_arrays

from .schema import DataConfig


def limited(split: Split, cfg: DataConfig, name: str) -> Split:
    limit = cfg.limit_train if name == "train" else cfg.limit_test
    return head(split, limit) if limit else split


def open_split(cfg: DataConfig, split: str) -> Split:
    """The configured split: its first data.limit_* samples, cropped and resized to data.image_size
    and converted to data.channels where they are set."""
    return resized(limited(open_source(cfg.name, split, cfg.root), cfg, split), cfg.image_size, cfg.channels)


def load_split(cfg: DataConfig, split: str) -> ImageArrays:
    """The split in memory (the same samples `prepare` shards)."""
    return to_arrays(open_split(cfg, split))


def check_shape(data: ImageArrays, in_channels: int, image_size: int) -> None:
    """Images must match the encoder: say which data set and which config fields disagree."""
    n, h, w, c = data.images.shape
    if (h, w, c) != (image_size, image_size, in_channels):
        raise ValueError(
            f"data set {data.name!r} has images of {h}x{w}x{c}, but the model expects "
            f"{image_size}x{image_size}x{in_channels} (model.image_size={image_size}, "
            f"model.in_channels={in_channels}); choose a model preset for this data set")
