import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest and the jobs share them.
torch.set_num_threads(int(os.environ.get("TREEDIFF_TEST_THREADS", "2")))


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"
