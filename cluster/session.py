"""The Ray session: a local cluster bound to loopback by default, or an existing cluster."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .config import ClusterConfig


def local_env(cfg: ClusterConfig) -> dict[str, str]:
    """Environment of a local cluster's processes.

    On loopback, Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the mode Ray
    uses on laptops) makes 127.0.0.1 the node address, and Ray then binds every server (GCS,
    raylet, workers, agents) to loopback; `ray.init(_node_ip_address="127.0.0.1")` alone is
    resolved to the machine's external address. gloo is pinned to the loopback interface.
    """
    env = {"RAY_AUTH_MODE": "token"}
    if cfg.node_ip.startswith("127."):
        env |= {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo"}
    return env


def prepare_environment(cfg: ClusterConfig) -> dict[str, str | None]:
    """Set the environment a session needs; call it before `import ray` where possible (the CLI does).

    Returns the previous values, for `restore_environment`.
    """
    env = {"RAY_AUTH_MODE": "token"} if cfg.address else local_env(cfg)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _sync_ray_constant()
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _sync_ray_constant()


def _sync_ray_constant() -> None:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER into a constant when it is imported; when ray was
    imported before the variable changed, bring the constant in line with it."""
    if "ray" in sys.modules:
        from ray._private import ray_constants
        value = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        default = not (sys.platform == "darwin" or sys.platform.startswith("win"))
        ray_constants.ENABLE_RAY_CLUSTER = default if value is None else value not in ("0", "false", "False")


@contextmanager
def ray_session(cfg: ClusterConfig):
    """ray.init for the duration of the block; shut down only what this block started."""
    import ray

    if ray.is_initialized():
        yield False
        return
    previous = prepare_environment(cfg)
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), _node_ip_address=cfg.node_ip,
                 include_dashboard=False, runtime_env={"env_vars": local_env(cfg)}, log_to_driver=True)
    try:
        yield True
    finally:
        ray.shutdown()
        restore_environment(previous)
