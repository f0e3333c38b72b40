"""`treediff monitor`: TensorBoard on a run's event files, bound to loopback by default."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

def start(logdir: str | Path, host: str = "127.0.0.1", port: int = 6006, timeout_s: float = 60):
    """Start TensorBoard; returns (process, url) once it answers."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise FileNotFoundError(f"no TensorBoard events at {logdir} (run a job first, or check run_dir)")
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    tb = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen([str(tb), "--logdir", str(logdir), "--host", host, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://{host}:{port}/"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"TensorBoard exited ({proc.returncode}): {proc.stdout.read()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise TimeoutError(f"TensorBoard did not answer at {url} within {timeout_s:.0f} s")

def tunnel_hint(host: str, port: int) -> str:
    import getpass
    return (f"from your machine: ssh -N -L {port}:{host}:{port} {getpass.getuser()}@{socket.gethostname()} "
            f"then open http://127.0.0.1:{port}/")

def stop(proc: subprocess.Popen) -> None:
    import os
    import signal
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # TensorBoard and its data-server child
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
