"""Rendered batch scripts: golden files for 1 and 4 nodes, shellcheck, and the command's checks."""
import subprocess
import sys
from pathlib import Path

import pytest

from render_golden import CASES, GOLDEN, rendered


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_script_matches_its_golden_file(name):
    assert rendered(name) == (GOLDEN / name).read_text(), \
        f"the template changed: review, then re-run tests/cluster/render_golden.py ({name})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_script_passes_shellcheck(shellcheck, name):
    proc = subprocess.run([shellcheck, "--severity=info", str(GOLDEN / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_local_slurm_script_passes_shellcheck(shellcheck):
    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm-local.sh"
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_four_node_script_starts_a_head_and_joins_three_nodes():
    text = (GOLDEN / "pipeline-4nodes.sbatch").read_text()
    assert "#SBATCH --nodes=4" in text and "#SBATCH --gpus-per-node=4" in text and "#SBATCH --qos=high" in text
    assert "ray start --head --block" in text and 'for node in "${NODES[@]:1}"' in text
    assert "--include-dashboard=false" in text and "0.0.0.0" not in text
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@300" in text
    assert 'RAY_TMPDIR="/local/scratch/treediff-ray-$SLURM_JOB_ID"' in text
    # the user's overrides reach the driver; cluster.* is the script's business
    assert "python -m jobs.cli pipeline run_dir=/shared/runs/cifar data=cifar10" in text


def test_every_srun_step_asks_for_the_nodes_cpus_and_gpus():
    # srun does not inherit --cpus-per-task (Slurm >= 22.05): each step must pass it, and the GPUs
    text = (GOLDEN / "pipeline-4nodes.sbatch").read_text()
    steps = [line for line in text.splitlines() if line.strip().startswith(('srun', '"${SRUN[@]}"'))]
    assert len(steps) == 2  # the head, and the loop over the other nodes
    assert 'SRUN=(srun --nodes=1 --ntasks=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" --gpus-per-node=4)' in text
    assert all(line.strip().startswith('"${SRUN[@]}"') for line in steps)
    one = (GOLDEN / "pipeline-1node.sbatch").read_text()
    assert 'SRUN=(srun --nodes=1 --ntasks=1 --cpus-per-task="$SLURM_CPUS_PER_TASK")' in one


def test_every_port_lies_in_the_jobs_own_block_and_addresses_are_resolved():
    import re
    text = (GOLDEN / "pipeline-4nodes.sbatch").read_text()
    ports = re.findall(r"--((?:[a-z]+-)*port)=([^\s\"]+)", text)
    assert {name for name, _ in ports} >= {"port", "node-manager-port", "object-manager-port", "ray-client-server-port",
                                          "dashboard-port", "min-worker-port", "max-worker-port"}
    assert all("PORT_BASE" in value for _, value in ports), ports  # nothing outside the per-job block
    assert '"--max-worker-port=$((PORT_BASE + 1000 - 1))"' in text  # ~980 worker ports, not 90
    assert "getent ahostsv4" in text and 'HEAD_IP=$(node_ip "$HEAD")' in text  # NodeAddr may be a hostname


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_dry_run_prints_the_script_and_bad_values_are_named(tmp_path):
    proc = cli("submit", "slurm", "grow", f"run_dir={tmp_path}/run", "slurm.nodes=2", "--dry-run")
    assert proc.returncode == 0 and proc.stdout.startswith("#!/bin/bash") and "#SBATCH --nodes=2" in proc.stdout
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    for args, field in [(["slurm.nodes=0"], "slurm.nodes"), (["slurm.time=soon"], "slurm.time"),
                        (["optim.epochs_initial=-1"], "optim.epochs_initial")]:
        proc = cli("submit", "slurm", "grow", *args, "--dry-run")
        assert proc.returncode == 2 and field in proc.stderr, proc.stderr
    proc = cli("submit", "slurm", "bogus")
    assert proc.returncode == 2 and "unknown job" in proc.stderr
    proc = cli("submit", "ray", "grow", "run_dir=relative/run", "--address", "http://127.0.0.1:1")
    assert proc.returncode == 2 and "absolute" in proc.stderr
