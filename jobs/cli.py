"""The `treediff` command: `treediff <job> [hydra overrides]`.

Each job is a Hydra app over configs/ (validated against jobs/schema.py); overrides are
Hydra's `key=value` syntax, e.g. `treediff grow data=fashion_mnist model=tree_mnist`.
"""
from __future__ import annotations

import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
JOBS = {
    "grow": "grow the CNN-TreeVAE phase by phase and score its leaves",
}


def _usage() -> str:
    lines = ["usage: treediff <job> [key=value ...]", "", "jobs:"]
    lines += [f"  {name:10s} {text}" for name, text in JOBS.items()]
    return "\n".join(lines)


def run_job(job: str, overrides: list[str]) -> object:
    """Compose the config for `job` with Hydra and run it (also used by tests)."""
    import hydra
    from omegaconf import DictConfig

    from . import schema

    schema.register()
    result: dict = {}

    @hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> None:
        try:
            objects = schema.to_objects(cfg)
        except Exception as e:  # validation errors name the field
            raise SystemExit(f"treediff {job}: invalid configuration: {e}") from None
        plain = schema.to_plain(cfg)
        if job == "grow":
            from . import grow
            result["value"] = grow.run(objects, plain)

    argv = sys.argv
    sys.argv = [f"treediff-{job}"] + overrides
    try:
        app()
    finally:
        sys.argv = argv
    return result.get("value")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    job, overrides = argv[0], argv[1:]
    if job not in JOBS:
        print(f"treediff: unknown job {job!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    run_job(job, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
