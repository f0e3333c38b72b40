"""`treediff monitor`: TensorBoard on a finished run, on 127.0.0.1, read over HTTP, then stopped."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from growth_helpers import NO_FLOORS
from jobs.cli import run_job


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_monitor_serves_a_finished_runs_scalars_and_images(tmp_path):
    run = tmp_path / "run"
    run_job("grow", [f"run_dir={run}", "cluster=inprocess", "optim.epochs_initial=2", "optim.epochs_subtree=1",
                     "optim.epochs_finetune=1", "growth.num_clusters_tree=2", *NO_FLOORS])
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "monitor", f"run_dir={run}", "monitor.port=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:(\d+)/)", line)
        assert match, line + proc.stdout.read(2000)
        url, port = match.group(1), int(match.group(2))
        assert "ssh -N -L" in proc.stdout.readline()
        runs = json.loads(get(url + "data/runs"))
        assert "driver" in runs
        deadline = time.time() + 30
        while "driver" not in (tags := json.loads(get(url + "data/plugin/scalars/tags"))):
            assert time.time() < deadline
            time.sleep(0.5)
        assert "metrics/nmi" in tags["driver"]
        q = urllib.parse.urlencode({"tag": "metrics/nmi", "run": "driver"})
        points = json.loads(get(url + "data/plugin/scalars/scalars?" + q))
        nmi = json.loads((run / "metrics.json").read_text())["tree"]["nmi"]
        assert abs(points[0][2] - nmi) < 1e-6
        images = json.loads(get(url + "data/plugin/images/tags"))["driver"]
        assert "tree/final" in images
        q = urllib.parse.urlencode({"tag": "tree/final", "run": "driver"})
        entry = json.loads(get(url + "data/plugin/images/images?" + q))[0]
        png = get(url + "data/plugin/images/individualImage?" + entry["query"])
        assert png[:4] == b"\x89PNG"
        # only loopback: nothing answers on the machine's other addresses
        listeners = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        assert any(f"127.0.0.1:{port}" in l for l in listeners.splitlines())
        assert not any(f"0.0.0.0:{port}" in l or f"*:{port}" in l for l in listeners.splitlines())
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped, data server included
