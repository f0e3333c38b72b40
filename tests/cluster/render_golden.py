"""The configurations behind tests/cluster/golden/*.sbatch. After a deliberate template change:
    .venv/bin/python tests/cluster/render_golden.py   (then review the diff)"""
from pathlib import Path

from cluster.config import SlurmConfig
from cluster.slurm import render

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = {
    "pipeline-1node.sbatch": (SlurmConfig(log_dir="/shared/runs/digits/slurm"), "pipeline",
                              ["run_dir=/shared/runs/digits", "cluster=local", "optim.epochs_initial=40"]),
    "pipeline-4nodes.sbatch": (SlurmConfig(nodes=4, cpus_per_node=16, gpus_per_node=4, partition="gpu", account="proj42",
                                           time="1-00:00:00", log_dir="/shared/runs/cifar/slurm", tmp_dir="/local/scratch",
                                           extra=["--qos=high"]), "pipeline",
                               ["run_dir=/shared/runs/cifar", "data=cifar10", "data.root=/shared/data/cifar-10-batches-py"]),
}


def rendered(name: str) -> str:
    cfg, job, overrides = CASES[name]
    return render(cfg, job, overrides, workdir="/shared/treediff", python="/shared/venv/bin/python")


if __name__ == "__main__":
    for name in CASES:
        (GOLDEN / name).write_text(rendered(name))
        print(f"wrote {GOLDEN / name}")
