"""Each real on-disk format, written by hand, converted by `treediff prepare` and streamed back:
the same keys, pixels and labels come out of the shards as went into the files."""
import numpy as np
import pytest
from PIL import Image

from jobs.cli import run_job
from treediff.data.idx import write_idx
from treediff.data.shards import ShardSet
from treediff.data.sources import open_source
from treediff.data.stream import StreamConfig, make_loader

from test_formats import write_celeba, write_cifar, write_cubicc  # noqa: E402  (same folder)


def streamed(path, split):
    out = {}
    for x, labels, keys in make_loader(ShardSet.open(path), split, StreamConfig(batch_size=7, num_workers=0)):
        for k, xi, l in zip(keys, x, labels):
            out[k] = (((xi + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), int(l))
    return out


def write_mnist(root):
    rng = np.random.default_rng(11)
    for prefix, n in (("train", 9), ("t10k", 4)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))


def write_same_size_folder(root):
    rng = np.random.default_rng(12)
    for split, classes in (("train", ("ant", "bee", "cow")), ("test", ("ant", "cow"))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for j in range(3):
                Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / split / c / f"{j}.png")


WRITERS = {
    "mnist": write_mnist,
    "fashion_mnist": write_mnist,  # the same idx layout; the class names are the source's own
    "cifar10": lambda root: write_cifar(root / "cifar-10-batches-py", n_train=3, n_test=5),
    "celeba": lambda root: write_celeba(root, partitions=[0, 0, 1, 2, 0, 2, 0]),
    "cubicc": lambda root: write_cubicc(root, kind="float", n=12),
    "folder": write_same_size_folder,
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_prepare_then_stream_gives_back_the_same_samples(tmp_path, name):
    root = tmp_path / "raw"
    root.mkdir()
    WRITERS[name](root)
    out = tmp_path / "shards"
    summary = run_job("prepare", [f"data.name={name}", f"data.root={root}", f"shards.path={out}",
                                  "shards.samples_per_shard=4"])
    for split in ("train", "test"):
        source = open_source(name, split, str(root))
        assert summary[split]["count"] == len(source) > 0
        got = streamed(out, split)
        assert sorted(got) == sorted(s.key for s in source)
        for sample in source:
            image, label = got[sample.key]
            np.testing.assert_array_equal(image, sample.image)
            assert label == (-1 if sample.label is None else sample.label)
    shards = ShardSet.open(out)
    assert shards.manifest["source"]["name"] == name and shards.manifest["source"]["root"] == str(root)
    assert shards.classes == list(open_source(name, "train", str(root)).classes)


def test_a_folder_of_mixed_sizes_is_cropped_and_resized_to_one_square(tmp_path):
    from treediff.data.split import square
    rng = np.random.default_rng(13)
    root = tmp_path / "raw"
    sizes = {"train": [(40, 30), (17, 25), (64, 64)], "test": [(33, 20)]}
    for split, shapes in sizes.items():
        (root / split / "cat").mkdir(parents=True)
        for j, (h, w) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / "cat" / f"{j}.png")
    with pytest.raises(ValueError, match="data.image_size"):  # as stored, the sizes cannot share shards
        run_job("prepare", ["data.name=folder", f"data.root={root}", f"shards.path={tmp_path / 'no'}"])
    out = tmp_path / "shards"
    run_job("prepare", ["data=folder", f"data.root={root}", f"shards.path={out}", "data.image_size=16",
                        "data.channels=1"])
    shards = ShardSet.open(out)
    assert shards.image_shape == (16, 16, 1) and shards.manifest["source"]["image_size"] == 16
    source = open_source("folder", "train", str(root))
    got = streamed(out, "train")
    for sample in source:
        np.testing.assert_array_equal(got[sample.key][0], square(sample.image, 16, 1))


def test_square_crops_the_centre_and_converts():
    from treediff.data.split import square
    image = np.zeros((30, 50, 3), np.uint8)
    image[:, 10:40] = 200  # the centred 30x30 square is uniform; the margins are not
    out = square(image, 15)
    assert out.shape == (15, 15, 3) and (out == 200).all()
    grey = square(image, 0, 1)
    assert grey.shape == (30, 50, 1) and grey[0, 20, 0] == 200 and grey[0, 0, 0] == 0
    assert square(grey, 10, 3).shape == (10, 10, 3)
