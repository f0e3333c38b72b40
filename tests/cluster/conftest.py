"""Fixtures for the submission tests: Debian's shellcheck and a real single-node SLURM
(munge + slurmctld + slurmd, started by scripts/slurm-local.sh on 127.0.0.1)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root to install {' '.join(packages)} from Debian's packages")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:  # stale package lists: refresh once
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="session")
def shellcheck():
    if shutil.which("shellcheck") is None:
        _apt_install("shellcheck")
    return shutil.which("shellcheck")


@pytest.fixture(scope="session")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("the local SLURM needs root (it installs and starts munge, slurmctld and slurmd)")
    script = ROOT / "scripts" / "slurm-local.sh"
    proc = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    yield
    subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True)
