"""`treediff prepare` through the real command: convert, refuse to overwrite, survive a kill."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jobs.cli import run_job
from treediff.data.idx import write_idx
from treediff.data.shards import MANIFEST, ShardSet
from treediff.data.sources import load_source
from treediff.data.stream import StreamConfig, make_loader


@pytest.fixture(scope="module")
def big_mnist(tmp_path_factory):
    """MNIST idx files of 30,000 random images: enough PNG encoding to interrupt mid-run."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30000), ("t10k", 1000)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return root


def test_prepare_digits_round_trip_through_the_command(tmp_path):
    out = tmp_path / "shards"
    summary = run_job("prepare", [f"shards.path={out}", "shards.samples_per_shard=200"])
    shards = ShardSet.open(out)
    assert summary["train"] == {"count": 1437, "shards": 8} and summary["test"] == {"count": 360, "shards": 2}
    assert shards.image_shape == (8, 8, 1) and shards.classes == [str(i) for i in range(10)]
    assert shards.manifest["source"]["name"] == "digits"
    source = load_source("digits", "test")
    got = {}
    for x, labels, keys in make_loader(shards, "test", StreamConfig(batch_size=64)):
        for k, xi, l in zip(keys, x, labels):
            got[k] = (((xi + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), int(l))
    assert len(got) == 360
    for i in range(len(source)):
        image, label = got[f"{i:07d}"]
        assert (image == source.images[i]).all() and label == source.labels[i]
    with pytest.raises(FileExistsError, match="shards.overwrite=true"):
        run_job("prepare", [f"shards.path={out}"])
    run_job("prepare", [f"shards.path={out}", "shards.overwrite=true", "data.limit_train=100"])
    assert ShardSet.open(out).count("train") == 100


def _wait_for_a_shard(parent, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.glob("*.tar") for p in parent.glob(".tmp-shards-*")) if parent.exists() else False:
            return
        if proc.poll() is not None:
            pytest.fail(f"prepare ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail("prepare wrote no shard in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_prepare_leaves_nothing_complete_looking(tmp_path, sig, big_mnist):
    out = tmp_path / "shards"
    data = ["data=mnist", f"data.root={big_mnist}"]
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "prepare", *data, f"shards.path={out}",
                             "shards.samples_per_shard=500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # a background shell starts children with SIGINT ignored; Python then
                            # never installs its KeyboardInterrupt handler: give the child the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_a_shard(tmp_path, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig != signal.SIGKILL:  # one line naming the signal, no traceback
        assert f"treediff prepare: interrupted: prepare interrupted by {sig.name}" in err.decode()
        assert "Traceback" not in err.decode()
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="treediff prepare"):
        ShardSet.open(out)
    leftovers = list(tmp_path.glob(".tmp-shards-*"))
    assert leftovers == [] if sig != signal.SIGKILL else len(leftovers) == 1  # SIGKILL cannot clean up
    # the next run removes the dead run's temporary directory and completes
    run_job("prepare", [*data, f"shards.path={out}", "shards.samples_per_shard=20000",
                        "data.limit_train=3000", "data.limit_test=500"])
    assert (out / MANIFEST).is_file() and list(tmp_path.glob(".tmp-shards-*")) == []
    assert ShardSet.open(out).count("train") == 3000
