"""`treediff submit ray` through Ray's Job Submission API, to a Ray head started here on 127.0.0.1
(dashboard and job server on loopback): a job followed to SUCCEEDED, a failing one to FAILED with
the end of its log."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from treediff.data.shards import ShardSet


def free_ports(n: int) -> list[int]:
    """n distinct free ports on loopback: every socket is held until all are chosen (one at a time,
    the kernel may hand the same port out twice, and `ray start` refuses two components on one port)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def group_alive(pgid: int) -> bool:
    for line in os.popen("ps -eo pgid=,stat=").read().splitlines():
        parts = line.split()
        if parts and int(parts[0]) == pgid and not parts[1].startswith("Z"):
            return True
    return False


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rayhead")
    temp_dir = tempfile.mkdtemp(prefix="tdrj-", dir="/tmp")  # Ray's unix sockets: paths <= 107 bytes
    port, dash, agent_http, agent_grpc, metrics, runtime_env = free_ports(6)
    # a cluster runs inside its Python environment: its `python` (the job's entrypoint) is this one
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PATH=path, RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0")
    ray = str(Path(sys.executable).parent / "ray")
    # a head with token auth needs a token: ~/.ray/auth_token, made here on a fresh machine (Ray's
    # own CLI; ray.init makes one too, but this may be the first Ray of the session)
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    # every port of our own: the agent's default HTTP port (52365) may belong to another Ray on the host
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
                             f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                             f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                            env=env, start_new_session=True, stdout=open(tmp / "head.log", "w"),
                            stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", dash), timeout=1):
                break
        except OSError:
            assert head.poll() is None and time.time() < deadline, (tmp / "head.log").read_text()[-3000:]
            time.sleep(0.5)
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # this head and everything it started; never `ray stop`
    deadline = time.time() + 5  # Ray's agents may ignore SIGTERM
    while group_alive(head.pid) and time.time() < deadline:
        time.sleep(0.5)
    if group_alive(head.pid):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def submit(address, *args):
    return subprocess.run([sys.executable, "-m", "jobs.cli", "submit", "ray", *args, "--address", address, "--wait"],
                          capture_output=True, text=True, timeout=600)


def test_job_is_followed_to_succeeded(ray_head, tmp_path):
    out = tmp_path / "shards"
    proc = submit(ray_head, "prepare", f"run_dir={tmp_path / 'run'}", f"shards.path={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "SUCCEEDED" in proc.stdout and "[prepare] wrote" in proc.stdout  # the job's own log, followed
    assert ShardSet.open(out).count("train") == 1437
    sid = proc.stdout.split("submitted Ray job ")[1].split()[0]
    status = subprocess.run([sys.executable, "-m", "jobs.cli", "status", sid, "--address", ray_head],
                            capture_output=True, text=True)
    assert f"{sid}  SUCCEEDED" in status.stdout


def test_failing_job_reports_failed_with_its_log_tail(ray_head, tmp_path):
    proc = submit(ray_head, "grow", f"run_dir={tmp_path / 'run'}", f"shards.path={tmp_path / 'shards'}",
                  "data=mnist", f"data.root={tmp_path / 'missing'}")
    assert proc.returncode == 1
    assert "FAILED; the end of its log" in proc.stderr
    assert f"data directory not found: {tmp_path / 'missing'}" in proc.stderr
