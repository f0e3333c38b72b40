"""Fixtures for the Ray runtime tests: digits shards and a local Ray cluster on 127.0.0.1."""
import os

import pytest

from treediff.data.shards import write_shard_set
from treediff.data.sources import open_source


@pytest.fixture(scope="session")
def digit_shards(tmp_path_factory):
    path = tmp_path_factory.mktemp("shards") / "digits"
    write_shard_set({s: open_source("digits", s) for s in ("train", "test")}, path, samples_per_shard=200,
                    progress=False)
    return str(path)


@pytest.fixture(scope="module")
def local_ray():
    from cluster.config import ClusterConfig
    from cluster.session import ray_session
    with ray_session(ClusterConfig(num_cpus=2)) as started:
        assert started
        yield
    assert os.environ.get("RAY_AUTH_MODE") == "token"
