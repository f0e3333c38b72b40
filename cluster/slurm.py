"""SLURM batch jobs: render slurm/job.sbatch from the config, submit with sbatch, and wrap
squeue / scontrol / sacct / scancel for treediff's jobs (names `treediff-<job>`)."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from .config import SlurmConfig, without_cluster_overrides

TEMPLATE = Path(__file__).resolve().parent.parent / "slurm" / "job.sbatch"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}


class SlurmError(RuntimeError):
    """A Slurm command failed; the message carries its stderr."""


def render(cfg: SlurmConfig, job: str, overrides: list[str], workdir: str | Path, python: str | None = None) -> str:
    """The batch script for `treediff <job> <overrides>` (the cluster.* overrides are the script's)."""
    kept = without_cluster_overrides(overrides)
    extra = [f"--partition={cfg.partition}"] if cfg.partition else []
    extra += [f"--account={cfg.account}"] if cfg.account else []
    extra += [f"--gpus-per-node={cfg.gpus_per_node}"] if cfg.gpus_per_node else []
    extra += ["--requeue", f"--signal=B:USR1@{cfg.signal_s}"] if cfg.requeue else ["--no-requeue"]
    extra += list(cfg.extra)
    venv = Path(python or sys.executable).parent
    setup = cfg.setup or f"source {shlex.quote(str(venv / 'activate'))}"
    return Template(TEMPLATE.read_text()).substitute(
        job=job, nodes=cfg.nodes, cpus_per_node=cfg.cpus_per_node, time=cfg.time, log_dir=cfg.log_dir,
        sbatch_extra="\n".join(f"#SBATCH {e}" for e in extra), workdir=shlex.quote(str(workdir)), setup=setup,
        tmp_dir=cfg.tmp_dir, port_base=cfg.port_base, port_blocks=cfg.port_blocks, port_block=cfg.port_block,
        interface=shlex.quote(cfg.interface),
        requeue_cmd='scontrol requeue "$SLURM_JOB_ID"' if cfg.requeue else "echo 'treediff: requeue is off'",
        ray_gpus=f"--num-gpus={cfg.gpus_per_node} " if cfg.gpus_per_node else "",
        srun_gpus=f" --gpus-per-node={cfg.gpus_per_node}" if cfg.gpus_per_node else "",
        dashboard="true" if cfg.dashboard else "false", overrides=" ".join(shlex.quote(o) for o in kept))


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"{cmd[0]} not found: is this a SLURM login node? (`bash scripts/slurm-local.sh start` "
                         f"runs a one-machine SLURM)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def submit(script: Path) -> str:
    """sbatch the script; returns the job id."""
    return _run(["sbatch", "--parsable", str(script)]).strip().split(";")[0]


@dataclass
class JobState:
    job_id: str
    name: str
    state: str
    exit_code: str
    elapsed: str

    @property
    def done(self) -> bool:
        return self.state.split()[0] in TERMINAL


def state(job_id: str) -> JobState:
    """The job's state: scontrol while Slurm remembers it, else sacct (-c without accounting)."""
    try:
        out = _run(["scontrol", "show", "job", "-o", job_id])
        fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
        return JobState(job_id, fields.get("JobName", ""), fields.get("JobState", "UNKNOWN"),
                        fields.get("ExitCode", ""), fields.get("RunTime", ""))
    except SlurmError:
        pass
    for cmd in (["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "jobid,jobname,state,exitcode,elapsed"],
                ["sacct", "-c", "-n", "-P", "-j", job_id, "-o", "jobid,jobname,state,exitcode,elapsed"]):
        try:
            rows = [r.split("|") for r in _run(cmd).splitlines() if r.strip()]
        except SlurmError:
            continue
        if rows:
            return JobState(*rows[-1][:5])
    raise SlurmError(f"job {job_id} is unknown to Slurm (scontrol and sacct)")


def jobs() -> list[JobState]:
    """treediff's jobs in the queue (squeue)."""
    out = _run(["squeue", "-h", "-o", "%i|%j|%T|%M", "--name", ",".join(f"treediff-{j}" for j in JOB_NAMES)])
    return [JobState(i, n, s, "", m) for i, n, s, m in (r.split("|") for r in out.splitlines() if r.strip())]


def cancel(job_id: str) -> None:
    _run(["scancel", job_id])


JOB_NAMES = ("prepare", "grow", "diffuse", "pipeline", "evaluate", "sweep")
