"""Run inside a loopback-only network namespace by test_multinode.py (not collected by pytest):

    unshare -n sh -c 'ip link set lo up && exec python multinode_scenario.py OUT_DIR SHARDS'

Starts two Ray nodes with `ray start` on 127.0.0.1 (token auth), trains the same loop with one
worker per node, records what each rank read and which node it ran on, the namespace's
interfaces and listeners, then stops both nodes by process group and writes OUT_DIR/result.json.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ["RAY_AUTH_MODE"] = "token"

from cluster.config import ClusterConfig, TrainerConfig  # noqa: E402
from cluster.loop import StageData, fit_stage  # noqa: E402
from cluster.session import ray_session  # noqa: E402
from treediff.stages import TreePhaseStage  # noqa: E402

from runtime_helpers import initial_stage  # noqa: E402


class KeyRecorder(TreePhaseStage):
    """Writes, per rank (its seed), the Ray node it runs on and the sample keys it trains on, by epoch."""

    def __init__(self, *args, out_dir: str, **kw):
        super().__init__(*args, **kw)
        self.out_dir = out_dir

    def setup(self, seed):
        import ray
        super().setup(seed)
        self.file = Path(self.out_dir, f"rank-seed-{seed}.txt")
        self.file.write_text(ray.get_runtime_context().get_node_id() + "\n")

    def begin_epoch(self, model, epoch):
        with open(self.file, "a") as f:
            f.write(f"#epoch {epoch}\n")
        return super().begin_epoch(model, epoch)

    def loss(self, forward, batch):
        with open(self.file, "a") as f:
            f.write("\n".join(batch[2]) + "\n")
        return super().loss(forward, batch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group(pgid: int) -> list[str]:
    return [p for p in os.popen("ps -eo pgid=,pid=,stat=").read().split("\n")
            if p.split() and int(p.split()[0]) == pgid and not p.split()[2].startswith("Z")]


def stop(proc: subprocess.Popen) -> None:
    """Stop one `ray start --block` and everything it started, by process group (never `ray stop`)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    deadline = time.time() + 20
    while group(proc.pid) and time.time() < deadline:  # Ray's own processes may outlive `ray start`
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.2)


def main(out: Path, shards: str) -> None:
    port = free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--block", "--disable-usage-stats"]
    # token auth needs a token (~/.ray/auth_token): made here when this is the machine's first Ray
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    procs = [subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                              start_new_session=True, stdout=open(out / "head.log", "w"), stderr=subprocess.STDOUT)]
    result = {}
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and procs[0].poll() is None, "the head did not start"
                time.sleep(0.5)
        procs.append(subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{port}", *common],
                                      start_new_session=True, stdout=open(out / "worker.log", "w"),
                                      stderr=subprocess.STDOUT))
        keys_dir = out / "keys"
        keys_dir.mkdir()
        with ray_session(ClusterConfig(address=f"127.0.0.1:{port}")):
            import ray
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                assert time.time() < deadline + 120 and procs[1].poll() is None, "the second node did not join"
                time.sleep(0.5)
            result["nodes_alive"] = sum(n["Alive"] for n in ray.nodes())
            trainer = TrainerConfig(num_workers=2, storage_path=str(out / "ray"), rendezvous="file")
            stage = initial_stage(epochs=2, cls=KeyRecorder, out_dir=str(keys_dir))
            _, metrics = fit_stage(stage, StageData(shards, global_batch=64, seed=10), trainer, name="two-nodes",
                                   local=False)
            result["loss_history"] = metrics["loss_history"]
            result["interfaces"] = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
            result["listeners"] = sorted({line.split()[3].rsplit(":", 1)[0] for line in subprocess.run(
                ["ss", "-ltnH"], capture_output=True, text=True).stdout.splitlines()})
        for f in sorted(keys_dir.glob("rank-seed-*.txt")):
            lines = f.read_text().split("\n")
            epochs, epoch = {}, None
            for line in lines[1:]:
                if line.startswith("#epoch"):
                    epoch = line.split()[1]
                elif line:
                    epochs.setdefault(epoch, set()).add(line)
            result[f.stem] = {"node": lines[0], "keys": {e: sorted(k) for e, k in epochs.items()}}
    finally:
        for proc in reversed(procs):
            stop(proc)
        result["survivors"] = [p for proc in procs for p in group(proc.pid)]
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
