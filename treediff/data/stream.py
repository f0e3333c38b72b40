"""Streaming a shard set to a training or evaluation rank: explicit splitting, equal epochs.

Two modes (treediff never reads RANK / WORLD_SIZE from the environment: the caller says
which rank it is, so the same code runs in one process, in Ray Train workers or in tests):

* exact      every shard is read once per epoch: the shard list (permuted per epoch with the
             same seed on every rank) is split by rank, then by DataLoader worker, so ranks
             and workers read disjoint shards and every sample is seen exactly once. Ranks get
             unequal batch counts when shards do not divide evenly: use it for evaluation.
* resampled  every rank yields exactly `batches_per_epoch` full batches, so collectives never
             wait on a finished rank, and every sample is drawn equally often whatever the
             shards' sizes: each epoch one plan, the same on every rank (seeded by seed and
             epoch), lays the samples in a sequence (the shards in a permuted order; for a key
             subset, the keys permuted) and gives each rank a contiguous, equal share of it,
             starting at a random offset (wrapping round when an epoch draws more samples than
             there are). A sample is then drawn once per epoch, or not at all when the epoch
             draws fewer than there are (a different few each epoch). A rank reads only the
             shards that hold its share (a key subset: every shard, keeping its keys) and
             decodes only its own samples. Use it for training.

Samples are shuffled in a seeded buffer, decoded from PNG to float tensors in [-1, 1]
(C, H, W), optionally augmented into several views ((views, C, H, W), for the contrastive
routing term), and batched inside the workers. A batch is `(x, labels, keys)`; labels are -1
for unlabelled data.

Bad data: shards are checked against the manifest's sha256 before streaming (`verify`), and a
shard that fails to read or decode raises `ShardError` naming it; with `on_error="skip"` it is
skipped with a warning that counts the skips instead.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .shards import ShardError, ShardSet, decode_png

MODES = ("exact", "resampled")
ON_ERROR = ("raise", "skip")


@dataclass
class StreamConfig:
    batch_size: int
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0  # DataLoader worker processes per rank (0: read in this process)
    mode: str = "exact"
    batches_per_epoch: int = 0  # resampled: batches per rank per epoch; 0: the split's size / (batch * world)
    shuffle_buffer: int = 1000  # samples; 0: no sample shuffling (exact mode keeps the shard order)
    seed: int = 0
    epoch: int = 0
    views: int = 1  # > 1: `augment` makes this many views of each image
    verify: bool = True  # sha256 of the shards this rank reads, before reading
    on_error: str = "raise"
    drop_last: bool = False  # exact mode: drop each worker's last partial batch
    keys: frozenset | None = None  # only these sample keys (e.g. the samples of the leaf a phase splits)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {self.mode!r}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error: must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.views < 1:
            raise ValueError(f"views: must be >= 1, got {self.views}")
        if self.batches_per_epoch < 0 or self.shuffle_buffer < 0:
            raise ValueError("batches_per_epoch and shuffle_buffer must be >= 0")


class _ErrorPolicy:
    """WebDataset exception handler: raise a ShardError naming the shard, or skip and count."""

    def __init__(self, on_error: str):
        self.on_error = on_error
        self.skipped = 0

    def __call__(self, exn: Exception) -> bool:
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "<unknown shard>")
        if isinstance(exn, ShardError):
            message = str(exn)
        else:
            message = f"shard {url} is corrupt or truncated: {type(exn).__name__}: {exn.args[0] if exn.args else ''}"
        if self.on_error == "skip":
            self.skipped += 1
            warnings.warn(f"{message}; skipped (on_error=skip; {self.skipped} skipped so far in this process)",
                          stacklevel=2)
            return True
        raise ShardError(message) from exn


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


def _permuted(urls: list[str], seed: int, epoch: int) -> list[str]:
    order = np.random.default_rng([seed, epoch]).permutation(len(urls))
    return [urls[i] for i in order]


class _InKeys:
    """Picklable predicate for wds.select: the sample's key is in the set."""

    def __init__(self, keys: frozenset):
        self.keys = keys

    def __call__(self, sample: dict) -> bool:
        return sample.get("__key__") in self.keys


class _Decode:
    """Sample dict -> (x, label, key); x float (C, H, W) or (views, C, H, W) in [-1, 1]."""

    def __init__(self, shape: tuple[int, int, int], views: int, augment: Callable | None):
        self.shape, self.views, self.augment = shape, views, augment

    def __call__(self, sample: dict) -> tuple[torch.Tensor, int, str]:
        url, key = sample.get("__url__", "<unknown shard>"), sample.get("__key__")
        if "png" not in sample:
            raise ShardError(f"shard {url}: sample {key!r} has no png member (members: {sorted(sample)})")
        try:
            image = decode_png(sample["png"], self.shape[2])
        except Exception as e:  # PIL raises several types for broken data
            raise ShardError(f"shard {url}: sample {key!r}: cannot decode its PNG ({e})") from e
        if image.shape != self.shape:
            raise ShardError(f"shard {url}: sample {key!r} has shape {image.shape}, the manifest says {self.shape}")
        u8 = torch.from_numpy(image).permute(2, 0, 1).contiguous()  # uint8 (C, H, W)
        if self.augment is not None:
            views = [self.augment(u8) for _ in range(self.views)]
            u8 = torch.stack(views) if self.views > 1 else views[0]
        x = u8.float().div(127.5).sub(1.0)
        label = int(sample["cls"]) if "cls" in sample else -1
        return x, label, key


def shard_stream(shards: ShardSet, split: str, cfg: StreamConfig, augment: Callable | None = None):
    """The per-rank WebDataset pipeline (an IterableDataset of batches)."""
    import webdataset as wds

    if cfg.views > 1 and augment is None:
        raise ValueError("views > 1 needs an augmentation (augment=...)")
    urls = shards.urls(split)
    policy = _ErrorPolicy(cfg.on_error)
    if cfg.mode == "exact":
        mine = _permuted(urls, cfg.seed, cfg.epoch)[cfg.rank::cfg.world_size]
        if cfg.num_workers and len(mine) < cfg.num_workers:
            warnings.warn(f"rank {cfg.rank} reads {len(mine)} shards with {cfg.num_workers} loader workers: some "
                          f"workers get none; write more, smaller shards (samples_per_shard)", stacklevel=2)
    else:
        owned = _EpochPlan.of(shards, split, cfg)
        mine = owned.urls
    if cfg.verify:
        good = []
        for url in mine:
            try:
                shards.verify(names=[url])
                good.append(url)
            except ShardError as e:
                policy(e)
        mine = good
    if not mine:
        raise ShardError(f"rank {cfg.rank}: no readable shards left in {shards.root} for split {split!r}")

    stages = [wds.SimpleShardList(mine), wds.split_by_worker, wds.tarfile_to_samples(handler=policy)]
    if cfg.mode == "resampled":
        stages.append(wds.pipelinefilter(owned.draws)())
    elif cfg.keys is not None:
        stages.append(wds.select(_InKeys(frozenset(cfg.keys))))
    if cfg.shuffle_buffer:
        stages.append(wds.pipelinefilter(_seeded_shuffle)(cfg.shuffle_buffer, cfg.seed, cfg.epoch, cfg.rank))
    # resampled with loader workers: each worker's last batch may be partial; the loader re-batches
    # them into full ones (make_loader), so the rank's total is exact
    partial = (cfg.mode == "exact" and not cfg.drop_last) or (cfg.mode == "resampled" and cfg.num_workers > 0)
    stages += [wds.map(_Decode(shards.image_shape, cfg.views, augment), handler=policy),
               wds.batched(cfg.batch_size, partial=partial)]
    return wds.DataPipeline(*stages)


def _seeded_shuffle(data, bufsize: int, seed: int, epoch: int, rank: int):
    """WebDataset's buffer shuffle with an RNG seeded per (seed, epoch, rank, worker) inside the worker."""
    import random

    from webdataset.filters import _shuffle

    rng = random.Random(hash((seed, epoch, rank, _worker_id())))
    yield from _shuffle(data, bufsize=bufsize, initial=min(bufsize, 100), rng=rng)


def make_loader(shards: ShardSet, split: str, cfg: StreamConfig, augment: Callable | None = None):
    """A loader of `(x, labels, keys)` batches for this rank (see the module docstring)."""
    import webdataset as wds

    pipeline = shard_stream(shards, split, cfg, augment)
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=cfg.num_workers,
                           persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None)
    if cfg.mode == "resampled":
        if cfg.num_workers:
            loader = loader.unbatched().batched(cfg.batch_size, partial=False)
        loader = loader.with_epoch(_batches_per_epoch(shards, split, cfg))
    return loader


def _batches_per_epoch(shards: ShardSet, split: str, cfg: StreamConfig) -> int:
    count = len(cfg.keys) if cfg.keys is not None else shards.count(split)
    return cfg.batches_per_epoch or max(1, count // (cfg.batch_size * cfg.world_size))


def deal(n: int, per_rank: int, rank: int, world: int, rng: np.random.Generator) -> np.ndarray:
    """This rank's `per_rank` draws from range(n): permutations of range(n) (as many as the epoch
    needs, one after the other, from `rng`, the same on every rank) dealt out in equal shares."""
    rounds = -(-per_rank * world // n)
    order = np.concatenate([rng.permutation(n) for _ in range(rounds)])
    return order[rank * per_rank:(rank + 1) * per_rank]


def epoch_rng(cfg: StreamConfig) -> np.random.Generator:
    """The epoch plan's generator: seeded by seed and epoch only, so every rank draws the same plan."""
    return np.random.default_rng([cfg.seed, cfg.epoch, 0x5EED])


class _EpochPlan:
    """Resampled mode: how often this rank draws each sample in this epoch (see the module doc).

    `urls` are the shards to read, in plan order; `draws` filters a stream of raw samples down to
    this rank's, each repeated as often as it is drawn. A sample is found by its key (a key
    subset) or by its shard and its position in that shard (every shard is read whole by one
    loader worker, in order)."""

    def __init__(self, urls: list[str], by_position: dict[str, np.ndarray] | None, by_key: dict[str, int] | None):
        self.urls, self.by_position, self.by_key = urls, by_position, by_key

    @classmethod
    def of(cls, shards: ShardSet, split: str, cfg: StreamConfig) -> "_EpochPlan":
        rng = epoch_rng(cfg)
        take = _batches_per_epoch(shards, split, cfg) * cfg.batch_size  # samples this rank draws
        if cfg.keys is not None:
            keys = sorted(cfg.keys)
            if not keys:
                raise ValueError("a resampled stream over an empty key subset")
            counts = np.bincount(deal(len(keys), take, cfg.rank, cfg.world_size, rng), minlength=len(keys))
            return cls(shards.urls(split), None, {keys[i]: int(c) for i, c in enumerate(counts) if c})
        records, urls = shards.shards(split), shards.urls(split)
        order = rng.permutation(len(records))
        sizes = np.array([int(records[i]["count"]) for i in order])
        total = int(sizes.sum())
        start = int(rng.integers(total))
        positions = (start + cfg.rank * take + np.arange(take)) % total  # in the sequence of permuted shards
        counts = np.bincount(positions, minlength=total)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        by_position = {urls[i]: counts[offsets[k]:offsets[k + 1]] for k, i in enumerate(order)
                       if counts[offsets[k]:offsets[k + 1]].any()}
        return cls([urls[i] for i in order if urls[i] in by_position], by_position, None)

    def draws(self, data):
        seen: dict[str, int] = {}
        for sample in data:
            if self.by_key is not None:
                n = self.by_key.get(sample.get("__key__"), 0)
            else:
                url = sample.get("__url__")
                i = seen.get(url, 0)
                seen[url] = i + 1
                counts = self.by_position.get(url)
                n = int(counts[i]) if counts is not None and i < len(counts) else 0
            for _ in range(n):
                yield sample
