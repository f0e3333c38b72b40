"""Runtime configuration (Hydra groups `cluster` and `trainer`), validated on construction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

RUNTIMES = ("ray", "inprocess")
PRECISIONS = ("auto", "fp32", "bf16")
RENDEZVOUS = ("auto", "file", "env")


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{field_name}: {msg}")


@dataclass
class ClusterConfig:
    """Where stages run: a Ray cluster (started locally on 127.0.0.1, or joined at `address`)."""

    runtime: str = "ray"  # ray: Ray Train + DeepSpeed workers; inprocess: one plain process (no Ray)
    address: Optional[str] = None  # None: start a local Ray cluster bound to 127.0.0.1
    num_cpus: int = 0  # local cluster only; 0: every core
    node_ip: str = "127.0.0.1"  # local cluster's node address (loopback: nothing listens outside)

    def __post_init__(self) -> None:
        _check(self.runtime in RUNTIMES, "cluster.runtime", f"must be one of {RUNTIMES}, got {self.runtime!r}")
        _check(self.num_cpus >= 0, "cluster.num_cpus", f"must be >= 0, got {self.num_cpus}")


@dataclass
class TrainerConfig:
    """The Ray Train + DeepSpeed loop shared by every stage."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: int = 1  # also the torch threads of each worker
    zero_stage: int = 1
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    grad_accum: int = 1
    grad_clip: float = 0.0  # 0: no clipping (the TreeVAE reference clips nothing)
    loader_workers: int = 0  # DataLoader processes per worker
    shuffle_buffer: int = 1000
    storage_path: str = "${run_dir}/ray"  # Ray Train run state and checkpoints (a shared file system on clusters)
    max_failures: int = 0  # worker failures Ray Train recovers from (restart from the last checkpoint)
    checkpoint_every: int = 5  # epochs between checkpoints reported to Ray Train (and after the last)
    rendezvous: str = "auto"  # auto: a file store (no TCP listener) on a local cluster, env:// on a real one
    timeout_s: int = 900  # collective timeout

    def __post_init__(self) -> None:
        for name in ("num_workers", "cpus_per_worker", "grad_accum", "checkpoint_every", "timeout_s"):
            _check(getattr(self, name) >= 1, f"trainer.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.zero_stage in (0, 1, 2, 3), "trainer.zero_stage", f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        _check(self.precision in PRECISIONS, "trainer.precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.rendezvous in RENDEZVOUS, "trainer.rendezvous",
               f"must be one of {RENDEZVOUS}, got {self.rendezvous!r}")
        _check(self.grad_clip >= 0, "trainer.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _check(self.loader_workers >= 0, "trainer.loader_workers", f"must be >= 0, got {self.loader_workers}")
        _check(self.max_failures >= -1, "trainer.max_failures", f"must be >= -1 (-1: unlimited), got {self.max_failures}")
