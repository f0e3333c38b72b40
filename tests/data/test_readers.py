"""Readers of the real on-disk formats, checked on small files written in those formats by hand."""
import gzip
import os
import re
import struct
from collections import Counter

import numpy as np
import pytest

from treediff.data.arrays import ImageArrays
from treediff.data.bundled import PHOTOS, load_digits, load_photo_patches
from treediff.data.idx import FASHION_CLASSES, load_mnist_format, read_idx, write_idx
from treediff.data.sources import SOURCES, load_source

FASHION = "/usr/share/datasets/fashion-mnist"


def handwritten_idx(array: np.ndarray) -> bytes:
    """The IDX layout written by hand (not by write_idx), to check the reader against the format."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def named(path) -> str:
    """A regex matching the path literally (error messages must name the file)."""
    return re.escape(str(path))


# --- IDX reader and writer ------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7, 28, 28), (11,), (3, 5, 4, 2)])
def test_read_idx_handwritten_exact(tmp_path, gz, shape):
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    raw = handwritten_idx(arr)
    path = tmp_path / ("x-ubyte.gz" if gz else "x-ubyte")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (4, 6), dtype=np.uint8)
    (tmp_path / "gz-without-suffix").write_bytes(gzip.compress(handwritten_idx(arr)))
    (tmp_path / "plain-with-suffix.gz").write_bytes(handwritten_idx(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "gz-without-suffix"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-with-suffix.gz"), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_write_idx_is_the_real_format(tmp_path, gz):
    arr = np.random.default_rng(2).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    path = tmp_path / ("w.gz" if gz else "w")
    write_idx(path, arr)
    stored = path.read_bytes()
    assert (stored[:2] == b"\x1f\x8b") == gz
    assert (gzip.decompress(stored) if gz else stored) == handwritten_idx(arr)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_write_idx_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "f", np.zeros(3, np.float32))


def test_idx_errors_name_the_file(tmp_path):
    arr = np.arange(40, dtype=np.uint8).reshape(10, 4)
    cases = {
        "short-data": (handwritten_idx(arr)[:-5], "truncated IDX data"),
        "short-header": (handwritten_idx(arr)[:9], "truncated IDX header"),
        "bad-magic": (b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x00", "bad magic"),
        "empty": (b"", "bad magic"),
        "float-type": (struct.pack(">BBBB", 0, 0, 0x0D, 1) + struct.pack(">I", 1) + b"\x00" * 4, "0x0d"),
        "cut-gzip.gz": (gzip.compress(handwritten_idx(arr))[:-12], "gzip"),
    }
    for fname, (content, what) in cases.items():
        (tmp_path / fname).write_bytes(content)
        with pytest.raises(ValueError, match=f"{named(tmp_path / fname)}.*{what}"):
            read_idx(tmp_path / fname)
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "nope")):
        read_idx(tmp_path / "nope")


# --- ImageArrays -----------------------------------------------------------------------------


def test_image_arrays_validation_names_the_set():
    ok = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(ValueError, match="set-a.*uint8"):
        ImageArrays(ok.astype(np.float32), None, [], "set-a")
    with pytest.raises(ValueError, match="set-b.*shape"):
        ImageArrays(np.zeros((4, 8, 8), np.uint8), None, [], "set-b")
    with pytest.raises(ValueError, match="set-c.*shape"):
        ImageArrays(np.zeros((4, 8, 8, 2), np.uint8), None, [], "set-c")
    with pytest.raises(ValueError, match="set-d.*4 images.*labels"):
        ImageArrays(ok, np.zeros(3, np.int64), [], "set-d")
    with pytest.raises(ValueError, match="set-e.*integers"):
        ImageArrays(ok, np.zeros(4, np.float32), [], "set-e")
    with pytest.raises(ValueError, match="set-f.*out of range"):
        ImageArrays(ok, np.array([0, 1, 2, 3]), ["a", "b"], "set-f")
    data = ImageArrays(np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1], np.uint8), ["a", "b"], "rgb")
    assert len(data) == 4 and data.labels.dtype == np.int64
    assert len(ImageArrays(ok, None, [], "unlabelled")) == 4


def test_image_arrays_subset():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 1)
    data = ImageArrays(images, np.array([0, 1, 2, 0, 1]), ["x", "y", "z"], "toy/train")
    sub = data.subset([4, 0])
    np.testing.assert_array_equal(sub.images, images[[4, 0]])
    np.testing.assert_array_equal(sub.labels, [1, 0])
    assert sub.classes == ["x", "y", "z"] and sub.name == "toy/train" and sub.labels.dtype == np.int64
    assert len(data.subset(np.array([True, False, True, False, False]))) == 2
    assert len(data.subset([])) == 0
    assert ImageArrays(images, None, [], "u").subset([1]).labels is None


# --- MNIST directory layout ------------------------------------------------------------------


def write_mnist_dir(root, n_train=12, n_test=5, gz=True):
    """A directory laid out like MNIST's download, written by hand; returns the true arrays."""
    root.mkdir(parents=True, exist_ok=True)
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
        assert data.images.shape == (len(truth[prefix][0]), 28, 28, 1) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64 and data.name == f"mnist/{split}"
        np.testing.assert_array_equal(data.images[..., 0], truth[prefix][0])
        np.testing.assert_array_equal(data.labels, truth[prefix][1])
        assert data.classes == [str(i) for i in range(10)]
    data = load_source("mnist", "test", str(tmp_path))
    assert len(data) == 5


def test_mnist_layout_class_names_and_torchvision_dir(tmp_path):
    truth = write_mnist_dir(tmp_path / "FashionMNIST" / "raw", gz=False)
    data = load_mnist_format(tmp_path, "train", classes="fashion_mnist", name="fashion_mnist")
    np.testing.assert_array_equal(data.images[..., 0], truth["train"][0])
    assert data.classes == FASHION_CLASSES and data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert load_mnist_format(tmp_path, "test", classes=list("abcdefghij")).classes[2] == "c"


def test_mnist_missing_file_names_directory_and_files(tmp_path):
    write_mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=f"{named(tmp_path)}.*missing t10k-labels-idx1-ubyte") as err:
        load_mnist_format(tmp_path, "test")
    assert "t10k-images-idx3-ubyte" in str(err.value)  # the expected names are listed
    load_mnist_format(tmp_path, "train")  # the other split is still complete
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        load_mnist_format(tmp_path / "no-such-dir", "train")


def test_mnist_count_mismatch_and_bad_split(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="do not match.*5 images.*3 labels"):
        load_mnist_format(tmp_path, "test")
    with pytest.raises(ValueError, match="'valid'"):
        load_mnist_format(tmp_path, "valid")


# --- bundled digits ---------------------------------------------------------------------------


def rows(data: ImageArrays) -> Counter:
    return Counter(img.tobytes() + bytes([int(lab)]) for img, lab in zip(data.images, data.labels))


def test_digits_split_is_a_stratified_partition():
    from sklearn.datasets import load_digits as sk_digits

    train, test = load_digits("train"), load_digits("test")
    for data, split in ((train, "train"), (test, "test")):
        assert data.images.dtype == np.uint8 and data.images.shape[1:] == (8, 8, 1)
        assert data.labels.dtype == np.int64 and data.name == f"digits/{split}"
        assert data.classes == [str(i) for i in range(10)]
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.images.max() == 255 and train.images.min() == 0
    # train + test is exactly the full set, as a multiset of (pixels, label): a partition.
    d = sk_digits()
    full = ImageArrays(np.rint(d.images * 255 / 16).astype(np.uint8)[..., None], d.target, [], "full")
    assert rows(train) + rows(test) == rows(full)
    # stratified: each class's share of the test set is 20 % of its size, to within one image
    per_class, in_test = np.bincount(d.target, minlength=10), np.bincount(test.labels, minlength=10)
    assert np.all(np.abs(in_test - 0.2 * per_class) <= 1)


def test_digits_split_is_deterministic():
    a, b, c = load_digits("test"), load_digits("test"), load_digits("test", seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert rows(a) != rows(c)
    assert len(load_digits("test", test_fraction=0.5)) in (898, 899)


# --- registry -------------------------------------------------------------------------------


def test_load_source_errors():
    assert set(SOURCES) >= {"digits", "mnist", "fashion_mnist"}
    with pytest.raises(ValueError, match="'cifar100'.*known: celeba, cifar10, cubicc, digits, fashion_mnist, folder, mnist"):
        load_source("cifar100", "train")
    with pytest.raises(ValueError, match="'val'"):
        load_source("digits", "val")
    with pytest.raises(ValueError, match="mnist.*root"):
        load_source("mnist", "train")
    with pytest.raises(FileNotFoundError, match="/nonexistent/fmnist.*apt-get install dataset-fashion-mnist"):
        load_source("fashion_mnist", "train", "/nonexistent/fmnist")
    assert len(load_source("digits", "test", root="/ignored")) == 360


def test_fashion_mnist_from_debian_package():
    if not os.path.exists(f"{FASHION}/train-images-idx3-ubyte.gz"):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{FASHION} is missing in CI: .ci/run installs dataset-fashion-mnist")
        pytest.skip(f"{FASHION} not found: apt-get install dataset-fashion-mnist (Debian) to run this test")
    train, test = load_source("fashion_mnist", "train"), load_source("fashion_mnist", "test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert len(train.classes) == 10 and train.classes == FASHION_CLASSES
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.full(10, 1000))


# --- bundled photo crops -------------------------------------------------------------------------


def test_photo_patches_are_disjoint_shuffled_and_deterministic():
    train, test = load_photo_patches("train"), load_photo_patches("test")
    assert train.images.shape == (4000, 32, 32, 3) and test.images.shape == (1000, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.classes == list(PHOTOS)
    assert np.bincount(train.labels).tolist() == [500] * 8 and np.bincount(test.labels).tolist() == [125] * 8
    # a prefix (what data.limit_train / limit_test keep) holds every class in about equal shares
    for data, n in ((train, 2048), (test, 512)):
        share = np.bincount(data.labels[:n], minlength=8) / n
        assert share.min() > 0.08 and share.max() < 0.17, share
    # the splits come from disjoint parts of each photo: a crop in both can only be a near-black
    # patch of the retina photo's border
    both = set(rows(train)) & set(rows(test))
    assert all(max(row[:-1]) <= 4 for row in both), len(both)
    again = load_photo_patches("test")
    np.testing.assert_array_equal(again.images, test.images)
    np.testing.assert_array_equal(again.labels, test.labels)
