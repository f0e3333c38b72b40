"""The `treediff` command: `treediff <job> [key=value ...]`.

Each job composes configs/ with Hydra (validated against jobs/schema.py) and runs; overrides
use Hydra's syntax, e.g. `treediff grow data=fashion_mnist model=tree_mnist optim=mnist`, or a data set's
preset: `treediff check experiment=cifar10 cluster=slurm_1node_8gpu`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
STOPPED = 3  # the exit status of a job that saved a checkpoint and stopped on request (resumable)


from .errors import JobError  # noqa: E402  (re-exported: tests and callers import it from here)


CLUSTER_COMMANDS = {
    "submit": "submit slurm|ray <job> [overrides] [--dry-run] [--wait] [--address URL]: run a job on a cluster",
    "status": "status [JOB_ID] [--address URL]: SLURM or Ray job state (no id: treediff's SLURM jobs)",
    "cancel": "cancel JOB_ID [--address URL]: scancel / stop a Ray job",
    "logs": "logs SUBMISSION_ID --address URL: a Ray job's output",
    "monitor": "monitor [run_dir=...]: TensorBoard on the run, on 127.0.0.1 (monitor.host, monitor.port)",
}


def _usage() -> str:
    lines = ["usage: treediff <job> [key=value ...]   (Hydra overrides; --cfg prints the resolved config)",
             "", "jobs:"]
    lines += [f"  {name:10s} {text}" for name, text in JOBS.items()]
    lines += ["", "on a cluster:"] + [f"  {name:10s} {text}" for name, text in CLUSTER_COMMANDS.items()]
    return "\n".join(lines)


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


def run_job(job: str, overrides: list[str]) -> Any:
    """Compose the config for `job` and run it (the tests call this too)."""
    objects, plain = compose(overrides)
    if job == "check":  # before the Ray environment: check starts nothing
        from . import check
        return check.run(objects, plain)
    stop = Path(objects.trainer.stop_request) if objects.trainer.stop_request else None
    if job == "stop":
        if stop is None:
            raise JobError("trainer.stop_request is empty: this run has no stop file to write")
        stop.parent.mkdir(parents=True, exist_ok=True)
        stop.touch()
        print(f"[stop] asked the run to checkpoint and stop: {stop} (the job exits with status {STOPPED} once "
              f"saved; re-run it to resume)", flush=True)
        return str(stop)
    if stop is not None and stop.exists():  # a request the last run of this run_dir already answered
        stop.unlink()
        print(f"[{job}] removed the earlier stop request {stop}", flush=True)
    if objects.cluster.runtime == "ray":
        from cluster.session import prepare_environment
        prepare_environment(objects.cluster)  # before anything imports ray
    if job == "prepare":
        from . import prepare
        return prepare.run(objects, plain)
    if job == "grow":
        from . import grow
        return grow.run(objects, plain)
    if job in ("diffuse", "pipeline", "sweep"):
        try:
            objects.check_diffusion()
        except ValueError as e:
            raise JobError(f"invalid configuration: {e}") from e
    if job == "diffuse":
        from . import diffuse
        return diffuse.run(objects, plain)
    if job == "pipeline":
        from . import diffuse, grow
        from .runtime import session
        with session(objects):  # one Ray session for every stage
            report = grow.run(objects, plain)
            result = {"tree": report, "diffusion": diffuse.run(objects, plain, modes=objects.pipeline.modes)}
            if objects.pipeline.evaluate:
                from . import evaluate
                result["eval"] = evaluate.run(objects, plain)
            return result
    if job == "evaluate":
        from . import evaluate
        return evaluate.run(objects, plain)
    if job == "sweep":
        from . import sweep
        return sweep.run(objects, plain)
    raise JobError(f"unknown job {job!r}")


def main(argv: list[str] | None = None) -> int:
    from cluster.loop import JobStopped, StageFailed

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    job, overrides = argv[0], argv[1:]
    if job in CLUSTER_COMMANDS:
        from . import submit
        try:
            return submit.COMMANDS[job](overrides)
        except (JobError, ValueError, FileNotFoundError, ConnectionError, TimeoutError, RuntimeError) as e:
            print(f"treediff {job}: error: {e}", file=sys.stderr)
            return 2
    if job not in JOBS:
        print(f"treediff: unknown job {job!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        if "--cfg" in overrides:
            import yaml
            print(yaml.safe_dump(compose([o for o in overrides if o != "--cfg"])[1], sort_keys=False))
            return 0
        run_job(job, overrides)
    except (JobError, ValueError, FileNotFoundError, FileExistsError, StageFailed) as e:
        print(f"treediff {job}: error: {e}", file=sys.stderr)
        return 2
    except JobStopped as e:
        print(f"treediff {job}: stopped: {e}", file=sys.stderr)
        return STOPPED
    except KeyboardInterrupt as e:
        print(f"treediff {job}: interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
