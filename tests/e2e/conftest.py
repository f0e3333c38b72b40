import pytest

from jobs.cli import run_job
from pipeline_helpers import DIFFUSE, GROW


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One real in-process pipeline (grow, both diffusion modes, evaluate), shared by the e2e tests:
    the digits_quick preset, as a user runs it, with GROW and DIFFUSE's figures (40 diffusion steps,
    a 3-epoch classifier) on top; its growth settings are GROW's."""
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    report = run_job("pipeline", ["experiment=digits_quick", f"run_dir={run_dir}",
                                  f"eval.cache_dir={run_dir.parent / 'fid'}"] + GROW + DIFFUSE + ["eval.classifier_epochs=3"])
    return run_dir, report
