"""Torch process-group set-up for Ray Train without a TCP listener on every interface.

Ray Train's default (`env://`) starts torch's TCPStore on worker 0, which listens on all
interfaces. On a local cluster (every worker on this host) the group is set up through a
FileStore instead: a file under the run's storage, no listener at all; gloo itself then binds
the interface named by GLOO_SOCKET_IFNAME (loopback, set by the session). On a real cluster
(`rendezvous=env`) Ray's own set-up is used, on the cluster's interface.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend


class _FileStoreBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: "FileStoreTorchConfig") -> None:
        store_dir = Path(backend_config.store_dir)
        store_dir.mkdir(parents=True, exist_ok=True)
        url = f"file://{store_dir / f'pg-{uuid.uuid4().hex}'}"  # a fresh file per group (FileStore cannot reuse one)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([worker_group.execute_single_async(i, _setup_torch_process_group, backend="gloo", world_rank=i,
                                                   world_size=len(worker_group), init_method=url,
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(len(worker_group))])


@dataclass
class FileStoreTorchConfig(TorchConfig):
    store_dir: str = "/tmp"

    @property
    def backend_cls(self):
        return _FileStoreBackend


def torch_config(rendezvous: str, local: bool, store_dir: str, timeout_s: int, use_gpu: bool) -> TorchConfig:
    if rendezvous == "file" or (rendezvous == "auto" and local and not use_gpu):
        return FileStoreTorchConfig(backend="gloo", timeout_s=timeout_s, store_dir=store_dir)
    return TorchConfig(timeout_s=timeout_s)
