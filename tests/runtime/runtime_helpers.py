"""Helpers of the Ray runtime tests (a module of its own: pytest's conftest is not importable)."""
import subprocess
import sys

import psutil
import torch

from treediff.stages import TreePhaseStage
from treediff.vae import OptimConfig, TreeVAE, TreeVAEConfig

TREE = TreeVAEConfig(latent_channels=4, bottom_up_channels=16, max_depth=4)
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")


def initial_stage(epochs=1, cls=TreePhaseStage, batch=64, **kw):
    torch.manual_seed(0)
    model = TreeVAE(TREE)
    return cls(TREE, model.tree.to_json(), model.state_dict(), None, OptimConfig(batch_size=batch, kl_start=0.1),
               epochs=epochs, **kw)



def listeners_of(pids) -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket owned by one of `pids`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        for pid in pids:
            if f"pid={pid}," in line:
                found.append((line.split()[3].rsplit(":", 1)[0], pid))
    return found



def descendants() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True)} | {me.pid}



def register_by_value(module_name: str) -> None:
    """Let Ray workers unpickle classes defined in a test module (tests are not importable there)."""
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[module_name])
