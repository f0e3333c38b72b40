"""Runtime configuration (Hydra groups `cluster` and `trainer`), validated on construction."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

RUNTIMES = ("ray", "inprocess")
PRECISIONS = ("auto", "fp32", "bf16")
RENDEZVOUS = ("auto", "file", "env")
BATCH_SCALING = ("fixed", "linear")


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
    zero_stage: int = 1  # 0, 1 or 2 (3 is refused: see __post_init__)
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    grad_accum: int = 1
    batch_scaling: str = "fixed"  # fixed: a stage's batch is global, split over workers; linear: per worker (cluster/scaling.py)
    min_micro_batch: int = 1  # fixed: a stage takes no more workers than leave it this many images each
    compile: bool = False  # torch.compile the model (DeepSpeed's engine.compile); bench/gpu measures it
    grad_clip: float = 0.0  # 0: no clipping (the TreeVAE reference clips nothing)
    loader_workers: int = 0  # DataLoader processes per worker (streaming only)
    cache_mb: int = 2048  # decode the training split into memory once per worker when it fits in this many MiB; 0: stream
    shuffle_buffer: int = 1000
    storage_path: str = "${run_dir}/ray"  # Ray Train run state and checkpoints (a shared file system on clusters)
    max_failures: int = 0  # worker failures Ray Train recovers from (restart from the last checkpoint)
    checkpoint_every: int = 5  # epochs between checkpoints reported to Ray Train (and after the last); 0: only the last
    checkpoint_minutes: float = 0.0  # also a checkpoint every this many minutes (mid-epoch too); 0: off
    sync_every: int = 16  # optimiser steps between the host's looks: NaN check, timer, stop request
    stop_request: str = ""  # a file whose existence asks the run to checkpoint and stop (`treediff stop`)
    rendezvous: str = "auto"  # auto: a file store (no TCP listener) on a local cluster, env:// on a real one
    timeout_s: int = 900  # collective timeout
    log_dir: str = ""  # ("": <storage_path>/logs) each worker's whole output (cluster/console.py); the console shows the project's lines
    verbose: bool = False  # true: Ray's and the workers' own output on the console too (`treediff <job> --verbose`)

    def __post_init__(self) -> None:
        for name in ("num_workers", "cpus_per_worker", "grad_accum", "sync_every", "timeout_s"):
            _check(getattr(self, name) >= 1, f"trainer.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.checkpoint_every >= 0, "trainer.checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        _check(self.checkpoint_minutes >= 0, "trainer.checkpoint_minutes", f"must be >= 0, got {self.checkpoint_minutes}")
        _check(self.zero_stage in (0, 1, 2, 3), "trainer.zero_stage", f"must be 0, 1, 2 or 3, got {self.zero_stage}")
        # ZeRO-3 partitions the weights themselves: the EMA, the fp32 export and the phase hand-off
        # read the whole module on every rank. ZeRO-2 already partitions gradients and optimiser state.
        _check(self.zero_stage != 3, "trainer.zero_stage",
               "3 is not supported (the EMA, the export and the growth hand-off read whole, unpartitioned "
               "weights); use 2, which partitions gradients and optimiser state, or 0/1")
        _check(self.precision in PRECISIONS, "trainer.precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.batch_scaling in BATCH_SCALING, "trainer.batch_scaling",
               f"must be one of {BATCH_SCALING}, got {self.batch_scaling!r}")
        _check(self.min_micro_batch >= 1, "trainer.min_micro_batch", f"must be >= 1, got {self.min_micro_batch}")
        _check(self.rendezvous in RENDEZVOUS, "trainer.rendezvous",
               f"must be one of {RENDEZVOUS}, got {self.rendezvous!r}")
        _check(not (self.rendezvous == "file" and self.use_gpu), "trainer.rendezvous",
               "file sets up a gloo process group, which would run the GPUs' collectives on the CPU; "
               "with trainer.use_gpu=true use auto or env (NCCL)")
        _check(self.grad_clip >= 0, "trainer.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _check(self.cache_mb >= 0, "trainer.cache_mb", f"must be >= 0, got {self.cache_mb}")
        _check(self.loader_workers >= 0, "trainer.loader_workers", f"must be >= 0, got {self.loader_workers}")
        _check(self.max_failures >= -1, "trainer.max_failures", f"must be >= -1 (-1: unlimited), got {self.max_failures}")


def without_cluster_overrides(overrides: list[str]) -> list[str]:
    """The user's overrides minus the cluster.* keys: a submitted job's runtime (where Ray runs) is
    the submission's business, set by key overrides after these. A `cluster=<preset>` choice stays:
    a preset (configs/cluster/slurm_*.yaml) also carries the trainer.* settings the driver needs."""
    return [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("cluster.")]


@dataclass
class SlurmConfig:
    """`treediff submit slurm`: the batch job that brings up Ray across its nodes and runs a job."""

    nodes: int = 1
    cpus_per_node: int = 2
    gpus_per_node: int = 0
    partition: Optional[str] = None
    account: Optional[str] = None
    time: str = "04:00:00"
    log_dir: str = "${run_dir}/slurm"  # batch logs and the rendered scripts (a shared file system)
    tmp_dir: str = "/tmp"  # node-local scratch for Ray's sockets and logs
    setup: str = ""  # shell lines before the driver (e.g. `module load cuda`); "": activate this Python's venv
    requeue: bool = True  # on preemption / near the time limit: requeue, the next run resumes
    signal_s: int = 300  # seconds before the time limit to send the requeue signal
    port_base: int = 20000  # each job takes port_block ports from port_base + (job id % port_blocks) * port_block
    port_blocks: int = 40
    port_block: int = 1000  # Ray's servers, client server and dashboard, then worker ports (one per worker process)
    interface: str = ""  # the network interface Ray binds on every node (e.g. ib0); "": the node's NodeAddr
    dashboard: bool = False  # Ray's dashboard (and job server) on the head's internal address, never 0.0.0.0
    extra: list[str] = field(default_factory=list)  # more `#SBATCH` options, e.g. ["--qos=high"]

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_node", "signal_s", "port_blocks"):
            _check(getattr(self, name) >= 1, f"slurm.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.port_block >= 100, "slurm.port_block", f"must be >= 100, got {self.port_block}")
        _check(self.gpus_per_node >= 0, "slurm.gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        _check(1024 <= self.port_base and self.port_base + self.port_blocks * self.port_block <= 65535, "slurm.port_base",
               f"port_base + port_blocks * port_block must lie in 1024..65535, got {self.port_base} + "
               f"{self.port_blocks} * {self.port_block}")
        _check(bool(re.fullmatch(r"(\d+-)?\d{1,2}(:\d{2}){0,2}", self.time)), "slurm.time",
               f"must be a Slurm time like 04:00:00 or 1-00:00:00, got {self.time!r}")


@dataclass
class MonitorConfig:
    """`treediff monitor`: TensorBoard on a run directory."""

    host: str = "127.0.0.1"  # loopback by default: reach it through an ssh tunnel
    port: int = 6006  # 0: any free port

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "monitor.port", f"must be in 0..65535, got {self.port}")
