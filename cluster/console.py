"""A quiet console: Ray's, Ray Train's and DeepSpeed's output goes to log files under
trainer.log_dir (`<run_dir>/logs/`), the console gets the project's own lines.

Every Ray Train worker writes its whole output (its prints, DeepSpeed's and Ray Train's logs,
warnings, tracebacks) to `<log_dir>/<run>-rank<R>.log`: `redirect_output` points the process's
file descriptors 1 and 2 there. While a run trains, the driver's `Follower` reads rank 0's file and
prints the project's lines (those that start with a tag such as "[grow] " or "[diffusion/path] ")
on the console, in order, as they are written. The Ray session's own logs stay in its session
directory, linked as `<log_dir>/ray`. `trainer.verbose=true` (or `treediff <job> --verbose`)
leaves every worker's output on the console instead, as Ray prints it.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

PROJECT_LINE = re.compile(r"^\[[a-z][a-z0-9_/@ .-]*\] ")  # "[grow] split leaf 2", not "[2026-12-02 ...] [INFO]"
PROGRESS_LINE = re.compile(r"^\[progress\] (\S+) (\d+)/(\d+)")  # rank 0: "[progress] <what> <done>/<total>"


def progress(what: str, done: int, total: int) -> None:
    """Rank 0's progress of a stage (an epoch done): a line in its log, a bar on the driver's terminal."""
    print(f"[progress] {what} {done}/{total}", flush=True)


def worker_log(log_dir: str | Path, run: str, rank: int | str) -> Path:
    """A worker's log file (rank "*": the pattern of all of the run's)."""
    return Path(log_dir) / f"{run.replace('/', '-')}-rank{rank}.log"


def redirect_output(path: str | Path) -> None:
    """Send this process's stdout and stderr (file descriptors and Python streams) to `path` (appended)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    _unpatch_print()


def _unpatch_print() -> None:
    """Ray Train V2 patches print() on its workers to also log each line (RAY_TRAIN_ENABLE_PRINT_PATCH,
    set to 0 on a local cluster; a cluster joined by address may not have it): into a log file
    every line would come twice."""
    import builtins
    try:
        from ray.train.v2._internal.logging import patch_print
    except ImportError:
        return
    builtins.print = getattr(patch_print, "_original_print", builtins.print)


class Follower:
    """Prints the project's lines of a growing log file on the console while a run trains (a
    thread of the driver); `stop()` prints what is left. Lines already in the file when it
    starts (an earlier run's) are skipped."""

    def __init__(self, path: str | Path, interval_s: float = 0.25):
        self.path, self.interval = Path(path), interval_s
        self.offset = self.path.stat().st_size if self.path.is_file() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow {self.path.name}", daemon=True)
        self._partial = ""
        self._bars: dict[str, object] = {}  # what -> tqdm bar (on a terminal only)

    def __enter__(self) -> "Follower":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._read()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def _progress(self, what: str, done: int, total: int) -> None:
        """A bar with rate and ETA per stage on a terminal (tqdm); nothing in a batch log, where
        the stage's own summary line records it."""
        from tqdm.auto import tqdm

        bar = self._bars.get(what)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = self._bars[what] = tqdm(total=total, desc=what, unit="epoch", leave=False, dynamic_ncols=True,
                                          disable=None, mininterval=0.5)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._bars[what]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        size = self.path.stat().st_size
        if size < self.offset:  # truncated or replaced: start over
            self.offset = 0
        if size == self.offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset = size
        text = self._partial + data.decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in (line.split("\r")[-1] for line in lines):
            step = PROGRESS_LINE.match(line)
            if step:
                self._progress(step.group(1), int(step.group(2)), int(step.group(3)))
            elif PROJECT_LINE.match(line):
                if self._bars:
                    from tqdm.auto import tqdm
                    tqdm.write(line)
                else:
                    print(line, flush=True)


def link_ray_logs(log_dir: str | Path, session_dir: str | None) -> None:
    """`<log_dir>/ray` -> the Ray session's log directory (where its daemons, the Train controller
    and the tasks write)."""
    if not session_dir:
        return
    link = Path(log_dir) / "ray"
    link.parent.mkdir(parents=True, exist_ok=True)
    target = Path(session_dir) / "logs"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    except OSError:
        (Path(log_dir) / "ray-session.txt").write_text(f"{target}\n")


def raylet_messages_to_log(log_dir: str | Path) -> None:
    """The raylet's pushed warnings (e.g. "N PYTHON worker processes have been started ...", sent
    when many workers start at once) go to `<log_dir>/ray-driver.log` instead of the console.

    Ray's driver prints them from a background thread through `ray._private.worker.print_to_stdstream`
    whatever log_to_driver says; no setting turns them off, so that one function is wrapped: messages
    from the pid "raylet" are appended to the file, everything else is printed as before."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker.print_to_stdstream, "__wrapped__", ray_worker.print_to_stdstream)
    path = Path(log_dir) / "ray-driver.log"

    def print_to_stdstream(data, ignore_prefix: bool):
        if data.get("pid") != "raylet":
            return original(data, ignore_prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(f"(raylet) {line}\n" for line in data.get("lines", []))

    print_to_stdstream.__wrapped__ = original
    ray_worker.print_to_stdstream = print_to_stdstream


def raylet_messages_to_console() -> None:
    """Undo raylet_messages_to_log (at the end of the Ray session)."""
    import ray._private.worker as ray_worker

    ray_worker.print_to_stdstream = getattr(ray_worker.print_to_stdstream, "__wrapped__", ray_worker.print_to_stdstream)
