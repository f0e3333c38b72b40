"""What the `treediff` command knows, below both of its front ends (jobs/cli.py runs a job here,
jobs/submit.py submits one to a cluster): the job names, the exit status of a stopped job, and
the composition of a job's config (Hydra over configs/, validated against jobs/schema.py).
"""
from __future__ import annotations

from pathlib import Path

from .errors import JobError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
JOBS = {
    "prepare": "convert the data set (data.name, data.root) into WebDataset shards at shards.path",
    "grow": "grow the CNN-TreeVAE phase by phase and score its leaves",
    "diffuse": "train the diffusion stage on a grown tree (diffusion.conditioning) and sample per-leaf grids",
    "pipeline": "grow, diffuse once per mode in pipeline.modes (default: path, recon), then evaluate",
    "evaluate": "FID (generation, per leaf, reconstruction), leaf purity and clustering metrics of a run",
    "sweep": "generation FID and purity over checkpoints x DDIM steps x eta x guidance x seeds (resumable)",
    "check": "validate the config, build its models (no data, no Ray), print parameter counts and the growth plan",
    "stop": "ask the running job of this run (same overrides) to checkpoint and stop; re-run it to resume",
}
# Commands that read a run directory, outside Hydra (`treediff report <run_dir>`)
TOOLS = {
    "report": "report <run_dir>: rebuild the run's report page <run_dir>/report.html (and its sweeps' pages)",
}
STOPPED = 3  # the exit status of a job that saved a checkpoint and stopped on request (resumable)

CLUSTER_COMMANDS = {
    "submit": "submit slurm|ray <job> [overrides] [--dry-run] [--wait] [--address URL]: run a job on a cluster",
    "status": "status [JOB_ID] [--address URL]: SLURM or Ray job state (no id: treediff's SLURM jobs)",
    "cancel": "cancel JOB_ID [--address URL]: scancel / stop a Ray job",
    "logs": "logs SUBMISSION_ID --address URL: a Ray job's output",
    "monitor": "monitor [run_dir=...]: TensorBoard on the run, on 127.0.0.1 (monitor.host, monitor.port)",
}


def compose(overrides: list[str]):
    """Compose and validate the config: returns (dataclass objects, plain dict)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from . import schema

    schema.register()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="treediff"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        return schema.to_objects(cfg), schema.to_plain(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise JobError(f"invalid configuration: {e}") from e
