"""Ray jobs: `treediff <job>` submitted to a running Ray cluster through the Job Submission API
(the dashboard's job server: keep it on loopback or the cluster's internal network; it runs
arbitrary code for anyone who reaches it)."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from .config import without_cluster_overrides

EXCLUDES = [".git", ".venv", "runs", "shards", "fid_stats", "*.egg-info", "__pycache__", ".pytest_cache"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _client(address: str):
    from ray.job_submission import JobSubmissionClient
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection refused, wrong URL, no job server
        raise ConnectionError(f"no Ray job server at {address}: {str(e).splitlines()[0] if str(e) else e} "
                              f"(start the head with the dashboard, e.g. `ray start --head --dashboard-host=127.0.0.1`)"
                              ) from e


PROJECT = Path(__file__).resolve().parent.parent  # treediff's code: what the job's working directory gets


def entrypoint(job: str, overrides: list[str]) -> str:
    """The job's command on the cluster: the user's overrides, then the driver joins the cluster
    (cluster.* keys; a cluster=<preset> choice among the overrides keeps its trainer.* settings)."""
    kept = without_cluster_overrides(overrides)
    return " ".join(["python -m jobs.cli", job, *map(shlex.quote, kept), "cluster.runtime=ray", "cluster.address=auto"])


def submit(address: str, job: str, overrides: list[str], workdir: str | Path = PROJECT) -> str:
    """Submit `treediff <job> <overrides>` with treediff's code as the job's working directory;
    returns the submission id."""
    entry = entrypoint(job, overrides)
    client = _client(address)
    deadline = time.time() + 120
    while True:
        try:
            return client.submit_job(entrypoint=entry, runtime_env={
                "working_dir": str(workdir), "excludes": EXCLUDES, "env_vars": {"RAY_AUTH_MODE": "token"}})
        except RuntimeError as e:  # a head that has just started has no job agent yet
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def status(address: str, submission_id: str) -> str:
    return str(_client(address).get_job_status(submission_id).value)


def logs(address: str, submission_id: str) -> str:
    return _client(address).get_job_logs(submission_id)


def follow(address: str, submission_id: str, timeout_s: float = 3600, poll_s: float = 1.0, echo=print) -> str:
    """Wait for the job to end, echoing new log lines; returns SUCCEEDED, FAILED or STOPPED."""
    client, shown = _client(address), 0
    deadline = time.time() + timeout_s
    while True:
        st = str(client.get_job_status(submission_id).value)
        text = client.get_job_logs(submission_id)
        if len(text) > shown:
            echo(text[shown:].rstrip("\n"))
            shown = len(text)
        if st in TERMINAL:
            return st
        if time.time() > deadline:
            raise TimeoutError(f"Ray job {submission_id} still {st} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def stop(address: str, submission_id: str) -> bool:
    return bool(_client(address).stop_job(submission_id))
