"""`treediff prepare`: convert a data set from its on-disk format into WebDataset shards."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from treediff.data.shards import MANIFEST, ShardSet, write_shard_set
from treediff.data.sources import SPLITS

from .data import open_split
from .schema import JobConfig


@contextmanager
def interrupt_flag():
    """SIGINT and SIGTERM only set a flag, which the writer polls after every image and turns
    into KeyboardInterrupt in its own code, so the partial set is always removed. (Python's own
    KeyboardInterrupt can land inside a __del__ or a GC callback, where it is printed and dropped,
    and the write then runs to completion; SIGTERM would otherwise skip the clean-up.)"""
    caught: list[str] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield lambda: None
        return

    def note(signum, frame) -> None:
        caught.append(signal.Signals(signum).name)
    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: f"prepare interrupted by {caught[0]}" if caught else None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(cfg: JobConfig, plain: dict) -> dict:
    out = Path(cfg.shards.path)
    if (out / MANIFEST).is_file() and not cfg.shards.overwrite:
        raise FileExistsError(f"{out} already holds a complete shard set; add shards.overwrite=true to replace it")
    splits = {split: open_split(cfg.data, split) for split in SPLITS}
    print(f"[prepare] {cfg.data.name}: " + ", ".join(f"{len(s)} {name}" for name, s in splits.items())
          + f" images -> {out} ({cfg.shards.samples_per_shard} per shard)", flush=True)
    source = {"name": cfg.data.name, "root": str(Path(cfg.data.root).resolve()) if cfg.data.root else None,
              "limit_train": cfg.data.limit_train, "limit_test": cfg.data.limit_test,
              "image_size": cfg.data.image_size, "channels": cfg.data.channels}
    with interrupt_flag() as interrupted:
        write_shard_set(splits, out, samples_per_shard=cfg.shards.samples_per_shard, seed=cfg.shards.seed,
                        source=source, overwrite=cfg.shards.overwrite, interrupted=interrupted)
    shards = ShardSet.open(out)
    summary = {"path": str(out), "image_shape": list(shards.image_shape), "classes": shards.classes,
               "manifest_sha256": shards.digest(),
               **{split: {"count": shards.count(split), "shards": len(shards.shards(split))} for split in SPLITS}}
    print(f"[prepare] wrote {summary['train']['shards']} train + {summary['test']['shards']} test shards, images "
          f"{'x'.join(map(str, shards.image_shape))}; manifest {out / MANIFEST} (sha256 "
          f"{summary['manifest_sha256'][:12]})", flush=True)
    return summary


__all__ = ["run"]
