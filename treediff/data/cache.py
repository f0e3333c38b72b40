"""A split decoded once into memory, and epochs drawn from it.

Training reads a split many times (every epoch of every growth phase). When the decoded split is
small enough (uint8, e.g. CIFAR-10's 50,000 training images are 146 MiB), a rank decodes it once
from its shards and draws every epoch from memory: no tar parsing or PNG decoding per step, and
a true shuffle. The epochs follow the same rule as the resampled stream (treediff.data.stream):
every rank yields exactly `batches_per_epoch` full batches, and one plan, the same on every rank
(seeded by seed and epoch), deals a permutation of the samples (or of a key subset) out in equal
shares, so a sample is drawn once per epoch (or, when an epoch draws fewer than there are, not
at all: a different few each epoch; when it draws more, the permutations repeat).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .augment import augment_u8
from .shards import ShardSet
from .stream import StreamConfig, deal, epoch_rng, make_loader


def split_nbytes(shards: ShardSet, split: str) -> int:
    """The decoded split's size in memory (uint8)."""
    return shards.count(split) * int(np.prod(shards.image_shape))


@dataclass
class SplitCache:
    images: torch.Tensor  # uint8 (N, C, H, W), in key order
    labels: torch.Tensor  # int64 (N,); -1 for unlabelled data
    keys: list[str]  # sorted

    @classmethod
    def read(cls, shards: ShardSet, split: str, verify: bool = True) -> "SplitCache":
        """Decode every sample of `split` (one exact pass; the shards' sha256 checked first)."""
        xs, ys, ks = [], [], []
        for x, y, k in make_loader(shards, split, StreamConfig(batch_size=1024, shuffle_buffer=0, verify=verify)):
            xs.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            ys.append(torch.as_tensor(y, dtype=torch.long))
            ks += list(k)
        order = np.argsort(ks, kind="stable")  # a fixed order, whatever the shards' order
        index = torch.from_numpy(order)
        return cls(torch.cat(xs)[index], torch.cat(ys)[index], [ks[i] for i in order])

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: frozenset | None) -> np.ndarray:
        """The rows of `keys` (all rows for None)."""
        if keys is None:
            return np.arange(len(self.keys))
        position = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys if k not in position]
        if missing:
            raise KeyError(f"{len(missing)} keys are not in the split, e.g. {sorted(missing)[:3]}")
        return np.sort(np.fromiter((position[k] for k in keys), dtype=np.int64, count=len(keys)))

    def epoch_rows(self, cfg: StreamConfig) -> np.ndarray:
        """This rank's rows for epoch `cfg.epoch`, in the order it trains on them."""
        pool = self.rows(cfg.keys)
        if len(pool) == 0:
            raise ValueError("an epoch over an empty key subset")
        per_rank = (cfg.batches_per_epoch or max(1, len(pool) // (cfg.batch_size * cfg.world_size))) * cfg.batch_size
        return pool[deal(len(pool), per_rank, cfg.rank, cfg.world_size, epoch_rng(cfg))]

    def batches(self, cfg: StreamConfig, augment: Callable | None = None) -> Iterator[tuple]:
        """`(x, labels, keys)` batches as the stream yields them: x float in [-1, 1], (B, C, H, W)
        or (B, views, C, H, W) with `augment`."""
        rows = self.epoch_rows(cfg)
        for start in range(0, len(rows), cfg.batch_size):
            idx = torch.from_numpy(rows[start:start + cfg.batch_size])
            u8 = self.images[idx]
            if cfg.views > 1 or augment is not None:
                if augment is None:
                    raise ValueError("views > 1 needs an augmentation (augment=...)")
                u8 = augment_u8(u8, augment, cfg.views)
                u8 = u8 if cfg.views > 1 else u8[:, 0]
            yield u8.float().div(127.5).sub(1.0), self.labels[idx], [self.keys[i] for i in idx.tolist()]


__all__ = ["SplitCache", "split_nbytes"]
