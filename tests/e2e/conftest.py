import pytest

from jobs.cli import run_job
from pipeline_helpers import DIFFUSE, GROW


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One real in-process pipeline (grow, both diffusion modes, evaluate), shared by the e2e tests."""
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    report = run_job("pipeline", [f"run_dir={run_dir}", f"eval.cache_dir={run_dir.parent / 'fid'}"] + GROW + DIFFUSE)
    return run_dir, report
