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
    # Ray Train V2 routes the workers' print() through its logger as well (every line twice in a
    # worker's log file, cluster/console.py): plain prints. Its preemption watcher (one more actor
    # process per Train run, polling for drained nodes) has nothing to watch on one machine.
    env = {"RAY_AUTH_MODE": "token", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
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
def ray_session(cfg: ClusterConfig, log_dir: str | None = None, verbose: bool = True):
    """ray.init for the duration of the block; shut down only what this block started.

    verbose=False: the tasks' and actors' output (Ray Train's controller, the farm) stays in the
    Ray session's logs, linked as `<log_dir>/ray`, and the driver logs only Ray's warnings
    (cluster/console.py: the workers' output goes to `<log_dir>`)."""
    import logging

    import ray

    if ray.is_initialized():
        yield False
        return
    previous = prepare_environment(cfg)
    quiet = {} if verbose else {"logging_level": logging.WARNING}
    if cfg.address:
        ctx = ray.init(address=cfg.address, log_to_driver=verbose, **quiet)
    else:
        ctx = ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), _node_ip_address=cfg.node_ip,
                       include_dashboard=False, runtime_env={"env_vars": local_env(cfg)}, log_to_driver=verbose, **quiet)
    if log_dir:
        from .console import link_ray_logs, raylet_messages_to_log
        link_ray_logs(log_dir, (getattr(ctx, "address_info", None) or {}).get("session_dir"))
        if not verbose:
            raylet_messages_to_log(log_dir)
    try:
        yield True
    finally:
        ray.shutdown()
        restore_environment(previous)
        if log_dir and not verbose:
            from .console import raylet_messages_to_console
            raylet_messages_to_console()
