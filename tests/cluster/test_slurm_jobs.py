"""`treediff submit slurm` against a real slurmctld + slurmd on 127.0.0.1: the embedded default's
pipeline (shortened) runs to COMPLETED with its checkpoints and TensorBoard events; the
end-of-time warning checkpoints, requeues, and the requeued run resumes; a cancelled job leaves
no process behind, Ray's included."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from console_helpers import ray_lines
from growth_helpers import NO_FLOORS

SHORT = ["optim.epochs_initial=2", "optim.epochs_subtree=1", "optim.epochs_finetune=1", *NO_FLOORS,
         "growth.num_clusters_tree=2",
         "diffusion.steps=20", "diffusion.warmup_steps=2", "sampler.steps=4", "sampler.samples_per_leaf=2",
         "pipeline.modes=[path]", "eval=smoke", "eval.classifier_epochs=1"]


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, cwd=cwd)


def job_id_of(out: str) -> str:
    return out.split("submitted SLURM job ")[1].split(":")[0]


def job_processes(job_id: str = "") -> list[str]:
    """Processes that belong to the job (any job, without an id): its SLURM_JOB_ID in their
    environment, or its Ray temp dir in their command line (Ray's agents rewrite their environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            if "\nState:\tZ" in status:
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name == str(os.getpid()):
            continue
        ids = [e[len(b"SLURM_JOB_ID="):].decode() for e in env if e.startswith(b"SLURM_JOB_ID=")]
        ids = [i for i in ids if i != os.environ.get("SLURM_JOB_ID")]  # not a job the suite itself runs in
        if f"treediff-ray-{job_id}" in cmd or (job_id in ids if job_id else bool(ids)):
            found.append(f"{proc.name} {cmd[:120]}")
    return found


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(slurm):
    """A failed test must not leave its job running (and taking the cores) for the rest of the
    suite: cancel every job, wait for the queue to empty, then kill what is left of them."""
    yield
    subprocess.run(["scancel", "--full", "--user", str(os.getuid())], capture_output=True)
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip() and time.time() < deadline:
        time.sleep(0.5)
    for line in job_processes():
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_pipeline_batch_job_completes_with_checkpoints_and_events(slurm, tmp_path):
    proc = cli("submit", "slurm", "pipeline", "run_dir=run", "shards.path=shards", *SHORT, "--wait", cwd=tmp_path)
    log = next(iter((tmp_path / "run" / "slurm").glob("*.out")), None)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (log.read_text()[-3000:] if log else "")
    job_id = job_id_of(proc.stdout)
    assert f"job {job_id}: COMPLETED (exit 0:0" in proc.stdout
    status = cli("status", job_id, cwd=tmp_path)
    assert "COMPLETED" in status.stdout and "treediff-pipeline" in status.stdout
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "tree").glob("phase-*"))[-1].endswith("-finetune")
    assert (run / "diffusion" / "path" / "ema.pt").is_file()
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["checkpoints"]["path"]["generation"]["n"] == 32
    # rank 0's events from inside the allocation, under the run directory
    acc = EventAccumulator(str(run / "tb" / "tree"))
    acc.Reload()
    assert "tree/initial/loss" in acc.Tags()["scalars"]
    text = (run / "slurm" / f"treediff-pipeline-{job_id}.out").read_text()
    assert "treediff: pipeline exited with status 0" in text
    assert not ray_lines(text), text  # the batch log holds the project's lines; Ray's are in run/logs/
    assert (run / "logs" / "tree-rank0.log").is_file()
    assert not job_processes(job_id)


def scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout


def daemon_logs(job_id: str, lines: int = 20) -> str:
    """The slurmctld and slurmd log lines that name the job (scripts/slurm-local.sh's config
    has the daemons write under /var/log/slurm), for a failure message."""
    naming = re.compile(rf"(JobId=|[Jj]ob |\[){job_id}\b")
    out = []
    for name in ("slurmctld", "slurmd"):
        path = Path("/var/log/slurm") / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        hits = [line for line in text.splitlines() if naming.search(line)]
        out.append(f"\n--- {path}, the lines naming job {job_id}\n" + "\n".join(hits[-lines:]))
    return "".join(out)


def test_end_of_time_warning_checkpoints_then_requeues_and_the_run_resumes(slurm, tmp_path):
    # the USR1 warning (what --signal=B:USR1@300 sends), delivered now: the driver checkpoints
    # mid-phase and stops, the job requeues itself, and its second run continues that phase
    proc = cli("submit", "slurm", "grow", "run_dir=run", "shards.path=shards", "optim.epochs_initial=20",
               "growth.num_clusters_tree=2", "optim.epochs_subtree=1", "optim.epochs_finetune=1", *NO_FLOORS,
               "trainer.checkpoint_every=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id = job_id_of(proc.stdout)
    ray_run = tmp_path / "run" / "ray" / "tree"
    log = tmp_path / "run" / "slurm" / f"treediff-grow-{job_id}.out"

    def story() -> str:  # what a failure message needs: the job as Slurm and its daemons saw it, and its log
        return (scontrol_job(job_id) + daemon_logs(job_id) + "\n--- " + str(log) + "\n"
                + (log.read_text()[-4000:] if log.exists() else "(none)"))
    deadline = time.time() + 300
    while not list(ray_run.glob("checkpoint_*/progress.json")):  # the first phase is training
        assert time.time() < deadline, story()
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    deadline, released = time.time() + 600, False
    while "COMPLETED" not in (out := cli("status", job_id, cwd=tmp_path).stdout):
        assert time.time() < deadline and not any(s in out for s in ("FAILED", "CANCELLED", "TIMEOUT")), out + story()
        job = scontrol_job(job_id)
        if not released and "JobState=PENDING" in job and "Restarts=1" in job:
            # slurmctld holds a requeued batch job for ~2 min (its begin time); the test starts it
            # now, but not in the second the requeue revoked the first run's credential: slurmd
            # refuses a launch whose credential is dated in that second (exit 1 in 0 s, "Job
            # credential revoked" in slurmctld's log). A later begin time would wait for the
            # backfill scheduler's next pass (~30 s); the update itself starts the job at once.
            time.sleep(2)
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
            released = True
        time.sleep(1)
    text = log.read_text()
    assert "got the end-of-time signal" in text and "stopped on request" in text, text[-4000:]
    assert "treediff: grow exited with status 3" in text, text[-4000:]  # saved and stopped, then requeued
    assert "treediff: grow exited with status 0" in text, text[-4000:]  # the requeued run
    restarts = scontrol_job(job_id)
    assert "Restarts=1" in restarts, restarts
    initial = json.loads((tmp_path / "run" / "tree" / "phase-000-initial" / "meta.json").read_text())
    assert initial["resumed_from_epoch"] is not None and initial["resumed_from_epoch"] < 19
    assert not job_processes(job_id)


def test_cancelled_job_leaves_no_process(slurm, tmp_path):
    proc = cli("submit", "slurm", "grow", "run_dir=run", "shards.path=shards", "optim.epochs_initial=500", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id = job_id_of(proc.stdout)
    deadline = time.time() + 180
    while not any("raylet" in p for p in job_processes(job_id)):  # the job's Ray is up
        assert time.time() < deadline, cli("status", job_id, cwd=tmp_path).stdout + scontrol_job(job_id)
        time.sleep(0.5)
    assert any("raylet" in p for p in job_processes(job_id))
    assert cli("cancel", job_id, cwd=tmp_path).returncode == 0
    deadline = time.time() + 60
    while job_processes(job_id) and time.time() < deadline:
        time.sleep(0.5)
    assert not job_processes(job_id), job_processes(job_id)
    deadline = time.time() + 60
    while "CANCELLED" not in (out := cli("status", job_id, cwd=tmp_path).stdout):  # after COMPLETING
        assert time.time() < deadline, out
        time.sleep(0.5)
