"""Cluster presets: one `cluster=<name>` sets where Ray runs, the Ray Train + DeepSpeed workers and the
SLURM allocation, and a submitted job's driver still gets the preset's workers."""
import re
import shlex

import pytest

from cluster.config import without_cluster_overrides
from cluster.rayjobs import entrypoint
from jobs.cli import compose
from jobs.submit import submit

SLURM = {  # preset: (nodes, GPUs per node, workers, ZeRO stage)
    "slurm_1node_8gpu": (1, 8, 8, 2),
    "slurm_4node_8gpu": (4, 8, 32, 2),
}


@pytest.mark.parametrize("preset", sorted(SLURM))
def test_slurm_preset_sets_runtime_workers_and_allocation(preset):
    nodes, gpus, workers, zero = SLURM[preset]
    cfg = compose(["experiment=cifar10", f"cluster={preset}", "run_dir=/shared/runs/cifar"])[0]
    t, s = cfg.trainer, cfg.slurm
    assert (s.nodes, s.gpus_per_node, t.num_workers, t.zero_stage) == (nodes, gpus, workers, zero)
    assert workers == nodes * gpus and t.use_gpu and t.precision == "bf16"
    assert t.num_workers // s.nodes * t.cpus_per_worker < s.cpus_per_node  # a core left for Ray's trainer actor
    assert t.storage_path == "/shared/runs/cifar/ray" and s.log_dir == "/shared/runs/cifar/slurm"
    assert cfg.cluster.runtime == "ray" and cfg.eval.use_gpu and cfg.eval.workers == workers
    assert cfg.diffusion.model_channels == 128  # the experiment's science is untouched


def test_laptop_presets_keep_the_cpu_trainer():
    for preset, runtime in [("local", "ray"), ("inprocess", "inprocess")]:
        cfg = compose(["experiment=digits_quick", f"cluster={preset}"])[0]
        assert cfg.cluster.runtime == runtime and not cfg.trainer.use_gpu and cfg.trainer.num_workers == 2
    cfg = compose(["cluster=ray_address", "cluster.address=10.0.0.1:6379"])[0]
    assert cfg.cluster.address == "10.0.0.1:6379"


def test_submission_keeps_the_preset_and_sets_the_runtime_by_keys():
    assert without_cluster_overrides(["cluster=slurm_4node_8gpu", "cluster.address=x:1", "+cluster.num_cpus=2",
                                      "optim.lr=0.1"]) == ["cluster=slurm_4node_8gpu", "optim.lr=0.1"]
    user = ["experiment=cifar10", "cluster=slurm_4node_8gpu", "run_dir=/shared/runs/cifar"]
    args = shlex.split(entrypoint("pipeline", user))
    assert args[:4] == ["python", "-m", "jobs.cli", "pipeline"]
    cfg = compose(args[4:])[0]
    assert cfg.cluster.address == "auto" and cfg.trainer.num_workers == 32  # a Ray job's driver


def test_batch_script_driver_gets_the_preset_workers(capsys):
    user = ["experiment=cifar10", "cluster=slurm_4node_8gpu", "run_dir=/shared/runs/cifar"]
    assert submit(["slurm", "pipeline", *user, "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --cpus-per-task=64" in script and "--num-gpus=8 " in script
    driver = re.search(r"^python -m jobs\.cli pipeline (.*) \"\$\{CLUSTER\[@\]\}\" &$", script, re.M).group(1)
    assert shlex.split(driver) == user
    # what the driver composes on 1 node (a local Ray cluster) and on 4 (the head's address)
    local, joined = re.findall(r"^\s+CLUSTER=\((.*)\)$", script, re.M)
    env = {"$SLURM_CPUS_PER_TASK": "64", "$HEAD_IP": "10.0.0.1", "$PORT_BASE": "20300"}
    for keys, address in [(local, None), (joined, "10.0.0.1:20300")]:
        for var, value in env.items():
            keys = keys.replace(var, value)
        cfg = compose(user + shlex.split(keys))[0]
        assert (cfg.cluster.runtime, cfg.cluster.address) == ("ray", address)
        assert (cfg.trainer.num_workers, cfg.trainer.use_gpu, cfg.trainer.zero_stage) == (32, True, 2)
