"""The `treediff` command: `treediff <job> [key=value ...]`.

Each job composes configs/ with Hydra (validated against jobs/schema.py) and runs; overrides
use Hydra's syntax, e.g. `treediff grow data=fashion_mnist model=tree_mnist optim=mnist`, or a data set's
preset: `treediff check experiment=cifar10 cluster=slurm_1node_8gpu`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .errors import JobError  # noqa: F401  (re-exported: tests and callers import it from here)
from .registry import CLUSTER_COMMANDS, CONFIG_DIR, JOBS, STOPPED, TOOLS, compose  # noqa: F401  (re-exported)


def _usage() -> str:
    lines = ["usage: treediff <job> [key=value ...]   (Hydra overrides; --cfg prints the resolved config)",
             "", "jobs:"]
    lines += [f"  {name:10s} {text}" for name, text in JOBS.items()]
    lines += ["", "on a cluster:"] + [f"  {name:10s} {text}" for name, text in CLUSTER_COMMANDS.items()]
    lines += ["", "on a run directory:"] + [f"  {name:10s} {text}" for name, text in TOOLS.items()]
    return "\n".join(lines)


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
    if job in TOOLS:
        from . import report
        try:
            return report.main(overrides)
        except (JobError, ValueError, FileNotFoundError) as e:
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
        if "--verbose" in overrides:  # Ray's and the workers' own output on the console too
            overrides = [o for o in overrides if o != "--verbose"] + ["trainer.verbose=true"]
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
