"""What the Ray runtime needs from a job: a session, and the data set's shards."""
from __future__ import annotations

import contextlib
from pathlib import Path

from treediff.data.shards import MANIFEST, ShardSet

from .schema import JobConfig


def session(cfg: JobConfig):
    """A Ray session for runtime=ray (local on 127.0.0.1, or cluster.address); nothing otherwise."""
    if cfg.cluster.runtime != "ray":
        return contextlib.nullcontext(False)
    from cluster.session import ray_session
    return ray_session(cfg.cluster, log_dir=cfg.trainer.log_dir, verbose=cfg.trainer.verbose)


def is_local(cfg: JobConfig) -> bool:
    return not cfg.cluster.address


def ensure_shards(cfg: JobConfig, plain: dict, job: str) -> ShardSet:
    """The shard set at shards.path; written first (`treediff prepare`) when it does not exist yet.

    An existing set must hold this data set with the same limits: otherwise the error names the
    manifest, the difference and what to do.
    """
    path = Path(cfg.shards.path)
    if not (path / MANIFEST).is_file():
        from . import prepare
        print(f"[{job}] no shard set at {path}: preparing it from data.name={cfg.data.name}", flush=True)
        prepare.run(cfg, plain)
    shards = ShardSet.open(path)
    source = shards.manifest.get("source", {})
    want = {"name": cfg.data.name, "limit_train": cfg.data.limit_train, "limit_test": cfg.data.limit_test}
    diff = {k: (source.get(k), v) for k, v in want.items() if source.get(k) != v}
    if diff:
        raise ValueError(f"shard set {path} ({path / MANIFEST}) was prepared with "
                         + ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items()) + "; this job wants "
                         + ", ".join(f"data.{k}={b!r}" for k, (_, b) in diff.items())
                         + ": point shards.path elsewhere or re-run `treediff prepare ... shards.overwrite=true`")
    return shards
