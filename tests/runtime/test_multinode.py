"""Two Ray nodes started with `ray start` on 127.0.0.1 (with the token auth Ray 2.60 requires), one
Ray Train worker on each: the same loop trains, and the two ranks draw disjoint samples in each epoch.

Ray resolves a node address of 127.0.0.1 to the machine's external address for multi-node
clusters and then binds its servers to all interfaces, so the scenario runs in a network
namespace whose only interface is loopback (`unshare -n`): nothing it starts is reachable from
outside this machine, and the test checks that the namespace has no other interface."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_one_worker_per_node_reads_disjoint_shards(digit_shards, tmp_path):
    script = f"ip link set lo up && exec {sys.executable} {HERE / 'multinode_scenario.py'} {tmp_path} {digit_shards}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # multi-node
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=HERE, capture_output=True, text=True,
                          timeout=600, env={**env, "PYTHONPATH": str(HERE)})
    result_file = tmp_path / "result.json"
    assert result_file.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["nodes_alive"] == 2
    assert result["loss_history"][1] < result["loss_history"][0]
    ranks = [result["rank-seed-10"], result["rank-seed-11"]]
    assert ranks[0]["node"] != ranks[1]["node"]  # one worker on each node
    assert set(ranks[0]["keys"]) == set(ranks[1]["keys"]) == {"0", "1"}
    for epoch in ("0", "1"):  # within an epoch the ranks draw disjoint samples
        keys = [set(r["keys"][epoch]) for r in ranks]
        assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert [line.split()[0] for line in result["interfaces"].splitlines()] == ["lo"]
    assert result["listeners"]  # everything listened inside the loopback-only namespace
    assert result["survivors"] == []  # both nodes stopped by process group
