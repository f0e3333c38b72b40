"""The quiet console (cluster/console.py): a worker's whole output goes to its log file, the
driver's Follower shows only the project's lines of rank 0's file, and progress lines become
bars on a terminal (nothing in a batch log)."""
import subprocess
import sys
import time

from cluster.console import PROGRESS_LINE, PROJECT_LINE, Follower, worker_log


def test_project_lines_are_told_from_ray_and_deepspeed_lines():
    assert PROJECT_LINE.match("[grow] split leaf 2: most samples")
    assert PROJECT_LINE.match("[diffusion/path] step 20/60")
    assert not PROJECT_LINE.match("[2026-12-02 08:15:02,175] [WARNING] [real_accelerator.py:213] Setting accelerator")
    assert not PROJECT_LINE.match("(RayTrainWorker pid=123) PlacementGroupCleaner: Failed to query")
    assert PROGRESS_LINE.match("[progress] tree/initial 3/6").groups() == ("tree/initial", "3", "6")  # a bar, not a line


def test_follower_prints_only_new_project_lines_in_order(tmp_path, capsys):
    log = worker_log(tmp_path, "diffusion/path", 0)
    assert log.name == "diffusion-path-rank0.log"
    log.write_text("[grow] an earlier run's line\n")
    with Follower(log, interval_s=0.05):
        with open(log, "a") as f:
            f.write("INFO worker.py:1 Ray noise\n[grow] split leaf 2\n[progress] tree/initial 1/2\n")
            f.flush()
            time.sleep(0.3)
            f.write("[2026-12-02 08:15:02,175] [WARNING] DeepSpeed noise\n[grow] phase-001")  # no newline yet
            f.flush()
            time.sleep(0.3)
            f.write("-subtree-2 done\n")
    out = capsys.readouterr().out.splitlines()
    assert out == ["[grow] split leaf 2", "[grow] phase-001-subtree-2 done"]


def test_redirected_output_lands_in_the_log_file_and_not_on_the_console(tmp_path):
    log = tmp_path / "w-rank0.log"
    code = ("import os, sys; from cluster.console import redirect_output; redirect_output(sys.argv[1]); "
            "print('[grow] hello'); os.write(2, b'C-level stderr\\n'); print('warning', file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
    assert log.read_text().splitlines() == ["[grow] hello", "C-level stderr", "warning"]


def test_raylet_warnings_go_to_the_log_not_the_console(tmp_path, capsys):
    import ray._private.worker as ray_worker

    from cluster.console import raylet_messages_to_log

    original = ray_worker.print_to_stdstream
    try:
        raylet_messages_to_log(tmp_path)
        raylet_messages_to_log(tmp_path)  # twice (a second session): still one wrapper over Ray's own
        assert ray_worker.print_to_stdstream.__wrapped__ is original
        ray_worker.print_to_stdstream({"lines": ["WARNING: 8 PYTHON worker processes have been started"],
                                       "pid": "raylet", "is_err": False}, ignore_prefix=False)
    finally:
        ray_worker.print_to_stdstream = original
    assert "PYTHON worker" not in capsys.readouterr().out
    assert (tmp_path / "ray-driver.log").read_text() == "(raylet) WARNING: 8 PYTHON worker processes have been started\n"
