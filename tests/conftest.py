import os
import sys

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest and the jobs share them.
torch.set_num_threads(int(os.environ.get("TREEDIFF_TEST_THREADS", "2")))


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


def pytest_runtest_logreport(report):
    """Print a failure's traceback the moment it happens, not only in the summary: a CI run that is
    stopped at its time limit still shows why a test failed (`pytest -q` shows only an F)."""
    if report.failed:
        sys.stderr.write(f"\n---- FAILED {report.nodeid} ({report.when}, {report.duration:.0f} s)\n")
        sys.stderr.write(str(report.longrepr)[-6000:] + "\n")
        sys.stderr.flush()
