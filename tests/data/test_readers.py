"""Readers of the real on-disk formats, checked on small files written in those formats."""
import gzip
import os
import struct

import numpy as np
import pytest

from treediff.data.bundled import load_digits
from treediff.data.idx import load_mnist_format, read_idx, write_idx
from treediff.data.sources import load_source

FASHION = "/usr/share/datasets/fashion-mnist"


def handwritten_idx(array: np.ndarray) -> bytes:
    """The IDX layout written by hand (not by write_idx), to check the reader against the format."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reads_exact_pixels(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    raw = handwritten_idx(images)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    np.testing.assert_array_equal(read_idx(path), images)
    write_idx(tmp_path / "y.gz", images)
    assert gzip.decompress((tmp_path / "y.gz").read_bytes()) == raw


def test_idx_errors_name_the_file(tmp_path):
    arr = np.arange(40, dtype=np.uint8).reshape(10, 4)
    (tmp_path / "short").write_bytes(handwritten_idx(arr)[:-5])
    with pytest.raises(ValueError, match="short.*truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 10)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "float").write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\x00" * 4)
    with pytest.raises(ValueError, match="float.*0x0d"):
        read_idx(tmp_path / "float")
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


def write_mnist_dir(root, n_train=12, n_test=5, gz=True):
    rng = np.random.default_rng(1)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        sfx = ".gz" if gz else ""
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            raw = handwritten_idx(arr)
            (root / (stem + sfx)).write_bytes(gzip.compress(raw) if gz else raw)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_layout_round_trip(tmp_path, gz):
    truth = write_mnist_dir(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = load_mnist_format(tmp_path, split)
        np.testing.assert_array_equal(data.images[..., 0], truth[prefix][0])
        np.testing.assert_array_equal(data.labels, truth[prefix][1])
        assert data.images.shape[1:] == (28, 28, 1) and data.classes == [str(i) for i in range(10)]
    data = load_source("mnist", "test", str(tmp_path))
    assert len(data) == 5


def test_mnist_missing_file_and_mismatch(tmp_path):
    write_mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist_format(tmp_path, "test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        load_mnist_format(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        load_mnist_format(tmp_path / "no-such-dir", "train")


def test_digits_split_is_stratified_and_disjoint():
    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.uint8
    assert train.images.max() == 255 and train.images.min() == 0
    counts = np.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    rows = {r.tobytes() + bytes([l]) for r, l in zip(train.images, train.labels)}
    overlap = sum(r.tobytes() + bytes([l]) in rows for r, l in zip(test.images, test.labels))
    assert overlap < 5  # a few digits are pixel-identical duplicates in the UCI set itself


def test_unknown_source_lists_known_ones():
    with pytest.raises(ValueError, match="cifar100.*digits, fashion_mnist, mnist"):
        load_source("cifar100", "train")
    with pytest.raises(ValueError, match="split"):
        load_source("digits", "val")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_source("fashion_mnist", "train", "/nonexistent/fmnist")


def test_fashion_mnist_from_debian_package():
    if not os.path.exists(f"{FASHION}/train-images-idx3-ubyte.gz"):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{FASHION} is missing in CI: .ci/run installs dataset-fashion-mnist")
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    train, test = load_source("fashion_mnist", "train"), load_source("fashion_mnist", "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert (np.bincount(train.labels) == 6000).all() and train.classes[9] == "Ankle boot"
