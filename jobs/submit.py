"""`treediff submit slurm|ray`, `status`, `cancel`, `logs`, `monitor`: running jobs on a cluster.

    treediff submit slurm <job> [overrides] [--dry-run] [--wait]
    treediff submit ray <job> --address http://HEAD:8265 [overrides] [--wait]
    treediff status [JOB_ID] [--address URL]       (no id: treediff's jobs in the SLURM queue)
    treediff cancel JOB_ID [--address URL]
    treediff logs SUBMISSION_ID --address URL       (a Ray job's output)
    treediff monitor [run_dir=...] [monitor.port=...]

The job's own config is composed and validated before anything is submitted, so a typo fails
here, not in the queue an hour later.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


class UsageError(ValueError):
    pass


def _flags(args: list[str], names: tuple[str, ...], valued: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    flags, rest, it = {}, [], iter(args)
    for a in it:
        key = a.split("=", 1)[0]
        if key in valued:
            flags[key] = a.split("=", 1)[1] if "=" in a else next(it, None)
            if flags[key] is None:
                raise UsageError(f"{key} needs a value")
        elif a in names:
            flags[a] = True
        elif a.startswith("--"):
            raise UsageError(f"unknown option {a}")
        else:
            rest.append(a)
    return flags, rest


def submit(argv: list[str]) -> int:
    from .registry import JOBS, compose
    if len(argv) < 2 or argv[0] not in ("slurm", "ray"):
        raise UsageError("usage: treediff submit slurm|ray <job> [overrides] [--dry-run] [--wait] [--address URL]")
    where, job = argv[0], argv[1]
    if job not in JOBS:
        raise UsageError(f"unknown job {job!r}; jobs: {', '.join(JOBS)}")
    flags, overrides = _flags(argv[2:], ("--dry-run", "--wait"), ("--address",))
    cfg, _ = compose(overrides)  # validate now
    if job in ("diffuse", "pipeline", "sweep"):
        cfg.check_diffusion()
    if where == "slurm":
        return _submit_slurm(cfg, job, overrides, flags)
    return _submit_ray(cfg, job, overrides, flags)


def _submit_slurm(cfg, job: str, overrides: list[str], flags: dict) -> int:
    from cluster import slurm
    script = slurm.render(cfg.slurm, job, overrides, os.getcwd())
    if flags.get("--dry-run"):
        print(script, end="")
        return 0
    log_dir = Path(cfg.slurm.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{job}-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    path.write_text(script)
    job_id = slurm.submit(path)
    print(f"submitted SLURM job {job_id}: treediff {job} on {cfg.slurm.nodes} node(s)")
    print(f"  script   {path}")
    print(f"  log      {log_dir}/treediff-{job}-{job_id}.out")
    print(f"  status   treediff status {job_id}      cancel: treediff cancel {job_id}")
    print(f"  monitor  treediff monitor run_dir={cfg.run_dir}   (TensorBoard events in {cfg.run_dir}/tb)")
    if not flags.get("--wait"):
        return 0
    st = _wait_slurm(job_id)
    print(f"job {job_id}: {st.state} (exit {st.exit_code}, {st.elapsed})")
    return 0 if st.state == "COMPLETED" else 1


def _wait_slurm(job_id: str, poll_s: float = 1.0):
    from cluster import slurm
    while True:
        st = slurm.state(job_id)
        if st.done:
            return st
        time.sleep(poll_s)


def _submit_ray(cfg, job: str, overrides: list[str], flags: dict) -> int:
    from cluster import rayjobs
    address = flags.get("--address") or os.environ.get("RAY_JOB_SERVER") or "http://127.0.0.1:8265"
    relative = [f"{k}={v}" for k, v in (("run_dir", cfg.run_dir), ("shards.path", cfg.shards.path))
                if not Path(v).is_absolute()]
    if relative:  # the job runs in a copy of the code on the cluster: relative paths would land there
        raise UsageError(f"a Ray job runs on the cluster in its own working directory: give {', '.join(relative)} "
                         f"as absolute paths on the cluster's shared file system")
    sid = rayjobs.submit(address, job, overrides)
    print(f"submitted Ray job {sid} to {address}: treediff {job}")
    print(f"  status   treediff status {sid} --address {address}")
    print(f"  logs     treediff logs {sid} --address {address}")
    if not flags.get("--wait"):
        return 0
    st = rayjobs.follow(address, sid)
    print(f"Ray job {sid}: {st}")
    if st != "SUCCEEDED":
        tail = "\n".join(rayjobs.logs(address, sid).splitlines()[-20:])
        print(f"Ray job {sid} {st}; the end of its log:\n{tail}", file=sys.stderr)
        return 1
    return 0


def status(argv: list[str]) -> int:
    flags, ids = _flags(argv, (), ("--address",))
    if flags.get("--address"):
        from cluster import rayjobs
        if not ids:
            raise UsageError("usage: treediff status SUBMISSION_ID --address URL")
        for sid in ids:
            print(f"{sid}  {rayjobs.status(flags['--address'], sid)}")
        return 0
    from cluster import slurm
    rows = [slurm.state(i) for i in ids] if ids else slurm.jobs()
    print(f"{'JOBID':>8}  {'NAME':22} {'STATE':12} {'EXIT':6} ELAPSED")
    for r in rows:
        print(f"{r.job_id:>8}  {r.name:22} {r.state:12} {r.exit_code:6} {r.elapsed}")
    return 0


def cancel(argv: list[str]) -> int:
    flags, ids = _flags(argv, (), ("--address",))
    if not ids:
        raise UsageError("usage: treediff cancel JOB_ID [--address URL]")
    for i in ids:
        if flags.get("--address"):
            from cluster import rayjobs
            rayjobs.stop(flags["--address"], i)
        else:
            from cluster import slurm
            slurm.cancel(i)
        print(f"cancelled {i}")
    return 0


def logs(argv: list[str]) -> int:
    flags, ids = _flags(argv, (), ("--address",))
    if not ids or not flags.get("--address"):
        raise UsageError("usage: treediff logs SUBMISSION_ID --address URL (SLURM logs: see slurm.log_dir)")
    from cluster import rayjobs
    print(rayjobs.logs(flags["--address"], ids[0]), end="")
    return 0


def monitor(argv: list[str]) -> int:
    from cluster import monitor as tb
    from .registry import compose
    cfg, _ = compose(argv)
    proc, url = tb.start(Path(cfg.run_dir) / "tb", cfg.monitor.host, cfg.monitor.port)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    print(f"TensorBoard on {Path(cfg.run_dir) / 'tb'}: {url}", flush=True)
    if cfg.monitor.host.startswith("127."):
        print(f"  {tb.tunnel_hint(cfg.monitor.host, port)}", flush=True)
    print("  Ctrl-C stops it", flush=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        tb.stop(proc)
    return 0


COMMANDS = {"submit": submit, "status": status, "cancel": cancel, "logs": logs, "monitor": monitor}
