"""Readers of CIFAR-10, CelebA, CUBICC and image folders, checked on small files written by hand in
those exact on-disk formats, opened through the registry (open_source)."""
import pickle
import re
import struct

import numpy as np
import pytest
from PIL import Image

from treediff.data.folder import open_folder
from treediff.data.sources import SOURCES, load_source, open_source
from treediff.data.split import ArraySplit, FileSplit

SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def named(path) -> str:
    """A regex matching the path literally (error messages must name the file)."""
    return re.escape(str(path))


def check_keys(split, expected=None):
    keys = [split[i].key for i in range(len(split))]
    assert len(set(keys)) == len(keys), "keys must be unique"
    assert all(SAFE_KEY.match(k) for k in keys), keys
    if expected is not None:
        assert keys == list(expected)
    return keys


# --- CIFAR-10 (python version) ----------------------------------------------------------------

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def py2_pickle(obj) -> bytes:
    """`obj` pickled the way Python 2's cPickle (protocol 2) writes the CIFAR batches: str (here bytes)
    as (SHORT_)BINSTRING, ints, lists, dicts, and a NumPy 1 uint8 array via numpy.core.multiarray."""
    def string(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def integer(v):
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    def enc(o):
        if isinstance(o, bytes):
            return string(o)
        if isinstance(o, int):
            return integer(o)
        if isinstance(o, list):
            return b"](" + b"".join(enc(x) for x in o) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"
        assert isinstance(o, np.ndarray) and o.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
                 + b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb")
        shape = b"(" + b"".join(integer(d) for d in o.shape) + b"t"
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n(" + integer(0) + b"t" + string(b"b")
                + b"\x87R(" + integer(1) + shape + dtype + b"\x89" + string(o.tobytes()) + b"tb")

    return b"\x80\x02" + enc(obj) + b"."


def cifar_row(image: np.ndarray) -> np.ndarray:
    """One (32, 32, 3) image as a CIFAR row: the 1024 red values, then green, then blue, row-major."""
    return np.concatenate([image[:, :, c].ravel() for c in range(3)])


def write_cifar(directory, n_train=3, n_test=4, meta=CIFAR_NAMES, dumps=py2_pickle, seed=0):
    """cifar-10-batches-py written by hand; returns {batch name: (images (N, 32, 32, 3), labels)}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for i, name in enumerate([*TRAIN_BATCHES, "test_batch"]):
        n = n_test if name == "test_batch" else n_train
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": f"batch {i}".encode(), b"labels": labels,
                 b"data": np.stack([cifar_row(im) for im in images]),
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]}
        (directory / name).write_bytes(dumps(batch))
        truth[name] = (images, labels)
    if meta is not None:
        (directory / "batches.meta").write_bytes(dumps({b"num_cases_per_batch": 10000, b"label_names": meta,
                                                        b"num_vis": 3072}))
    return truth


def test_py2_pickle_helper_is_what_pickle_reads():
    arr = np.arange(600, dtype=np.uint8).reshape(2, 300)  # a long row takes the 4-byte BINSTRING
    out = pickle.loads(py2_pickle({b"data": arr, b"labels": [0, 7, 300], b"n": [b"x"]}), encoding="bytes")
    assert out[b"labels"] == [0, 7, 300] and out[b"n"] == [b"x"] and out[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(out[b"data"], arr)


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_both_layouts_exact(tmp_path, nested):
    truth = write_cifar(tmp_path / "cifar-10-batches-py" if nested else tmp_path)
    train, test = open_source("cifar10", "train", str(tmp_path)), open_source("cifar10", "test", str(tmp_path))
    assert isinstance(train, ArraySplit) and train.name == "cifar10/train" and test.name == "cifar10/test"
    assert len(train) == 15 and len(test) == 4 and train.labelled
    assert train.classes == [n.decode() for n in CIFAR_NAMES] == test.classes
    x_train = np.concatenate([truth[b][0] for b in TRAIN_BATCHES])
    y_train = sum((truth[b][1] for b in TRAIN_BATCHES), [])
    assert train.arrays.images.shape == (15, 32, 32, 3) and train.arrays.images.dtype == np.uint8
    np.testing.assert_array_equal(train.arrays.images, x_train)
    np.testing.assert_array_equal(train.arrays.labels, y_train)
    np.testing.assert_array_equal(test.arrays.images, truth["test_batch"][0])
    for i in (0, 7, 14):
        s = train[i]
        np.testing.assert_array_equal(s.image, x_train[i])
        assert s.label == y_train[i] and isinstance(s.label, int)
    check_keys(train, [f"{b}-{j:05d}" for b in TRAIN_BATCHES for j in range(3)])
    check_keys(test, [f"test_batch-{j:05d}" for j in range(4)])
    data = load_source("cifar10", "test", str(tmp_path / "cifar-10-batches-py" if nested else tmp_path))
    np.testing.assert_array_equal(data.labels, truth["test_batch"][1])


def test_cifar10_pixel_layout_is_planar_rgb(tmp_path):
    """Pixel (row 1, column 2) of channel c is at c * 1024 + 1 * 32 + 2 of the row."""
    truth = write_cifar(tmp_path, n_train=1, n_test=1)
    image = open_source("cifar10", "test", str(tmp_path))[0].image
    row = cifar_row(truth["test_batch"][0][0])
    assert [int(v) for v in image[1, 2]] == [int(row[c * 1024 + 34]) for c in range(3)]


def test_cifar10_class_names_from_meta_or_standard(tmp_path):
    write_cifar(tmp_path / "a", meta=[f"c{i}".encode() for i in range(10)])
    assert open_source("cifar10", "test", str(tmp_path / "a")).classes == [f"c{i}" for i in range(10)]
    write_cifar(tmp_path / "b", meta=None)
    classes = open_source("cifar10", "test", str(tmp_path / "b")).classes
    assert classes[0] == "airplane" and classes[9] == "truck" and len(classes) == 10


def test_cifar10_reads_python3_pickles(tmp_path):
    truth = write_cifar(tmp_path, dumps=lambda obj: pickle.dumps(obj, protocol=2))
    np.testing.assert_array_equal(open_source("cifar10", "test", str(tmp_path)).arrays.images, truth["test_batch"][0])


def test_cifar10_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "nowhere")):
        open_source("cifar10", "train", str(tmp_path / "nowhere"))
    write_cifar(tmp_path / "cifar-10-batches-py")
    batches = tmp_path / "cifar-10-batches-py"
    (batches / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=f"{named(batches)}: missing data_batch_3 .*'train'") as err:
        open_source("cifar10", "train", str(tmp_path))
    assert "data_batch_5" in str(err.value)  # the expected files are listed
    assert len(open_source("cifar10", "test", str(tmp_path))) == 4  # the other split is complete
    raw = (batches / "test_batch").read_bytes()
    (batches / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=f"{named(batches / 'test_batch')}: not a readable CIFAR pickle"):
        open_source("cifar10", "test", str(tmp_path))
    bad = {b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1], b"filenames": [b"a", b"b"]}
    (batches / "test_batch").write_bytes(py2_pickle(bad))
    with pytest.raises(ValueError, match=f"{named(batches / 'test_batch')}: b'data' must be .*3072.*\\(2, 3071\\)"):
        open_source("cifar10", "test", str(tmp_path))
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10], b"filenames": [b"a", b"b"]}
    (batches / "test_batch").write_bytes(py2_pickle(bad))
    with pytest.raises(ValueError, match=f"{named(batches / 'test_batch')}: labels must be in 0..9"):
        open_source("cifar10", "test", str(tmp_path))
    (batches / "test_batch").write_bytes(b"\x80\x02cposix\nsystem\nU\x04true\x85R.")  # code, not data
    with pytest.raises(ValueError, match=f"{named(batches / 'test_batch')}.*posix.system is not allowed"):
        open_source("cifar10", "test", str(tmp_path))


# --- CelebA (aligned) --------------------------------------------------------------------------

PARTITIONS = [0, 1, 2, 0, 2, 0, 1]  # train: 000001, 000004, 000006; test: 000003, 000005


def write_celeba(base, partitions=PARTITIONS, newline=b"\n", seed=3):
    """img_align_celeba/ of random 178x218 JPEGs (quality 95) and list_eval_partition.txt."""
    images = base / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"{i:06d}.jpg" for i in range(1, len(partitions) + 1)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(images / name, quality=95)
    (base / "list_eval_partition.txt").write_bytes(b"".join(f"{n} {p}".encode() + newline
                                                            for n, p in zip(names, partitions)))
    return images


def celeba_expected(path) -> np.ndarray:
    """PIL's decode of the file, the 148x148 crop at left=15, top=40, resized to 64x64 (bilinear)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").crop((15, 40, 163, 188)).resize((64, 64), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("torchvision_layout", [False, True])
def test_celeba_splits_and_exact_pixels(tmp_path, torchvision_layout):
    images = write_celeba(tmp_path / "celeba" if torchvision_layout else tmp_path,
                          newline=b"\r\n" if torchvision_layout else b"\n")
    train, test = open_source("celeba", "train", str(tmp_path)), open_source("celeba", "test", str(tmp_path))
    assert isinstance(train, FileSplit) and train.name == "celeba/train" and test.name == "celeba/test"
    assert (len(train), len(test)) == (3, 2)  # partition 1 (valid) is in neither split
    assert train.classes == [] and not train.labelled
    check_keys(train, ["000001", "000004", "000006"])
    check_keys(test, ["000003", "000005"])
    for split in (train, test):
        for s in split:
            assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8 and s.label is None
            np.testing.assert_array_equal(s.image, celeba_expected(images / f"{s.key}.jpg"))
    data = load_source("celeba", "test", str(tmp_path))
    assert data.images.shape == (2, 64, 64, 3) and data.labels is None


def test_celeba_matches_the_reference_torchvision_transform(tmp_path):
    import torchvision.transforms as T

    images = write_celeba(tmp_path, partitions=[0, 0])
    reference = T.Compose([T.Lambda(lambda x: T.functional.crop(x, left=15, top=40, width=148, height=148)),
                           T.Resize([64, 64], antialias=True)])
    for s in open_source("celeba", "train", str(tmp_path)):
        with Image.open(images / f"{s.key}.jpg") as im:
            np.testing.assert_array_equal(s.image, np.asarray(reference(im)))


def test_celeba_crop_box_is_exact(tmp_path):
    """Only the crop box is bright: any pixel from outside it would darken the 64x64 result."""
    images = write_celeba(tmp_path, partitions=[0])
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[40:188, 15:163] = 200
    Image.fromarray(pixels).save(images / "000001.jpg", format="PNG")  # lossless content under the .jpg name
    image = open_source("celeba", "train", str(tmp_path))[0].image
    assert (image == 200).all()


def test_celeba_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "nowhere")):
        open_source("celeba", "train", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=f"no CelebA data in {named(tmp_path)}.*list_eval_partition.txt"):
        open_source("celeba", "train", str(tmp_path))
    images = write_celeba(tmp_path)
    (tmp_path / "list_eval_partition.txt").rename(tmp_path / "partition.bak")
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "list_eval_partition.txt")):
        open_source("celeba", "train", str(tmp_path))
    (tmp_path / "partition.bak").rename(tmp_path / "list_eval_partition.txt")
    (images / "000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=named(images / "000005.jpg")):
        open_source("celeba", "test", str(tmp_path))
    assert len(open_source("celeba", "train", str(tmp_path))) == 3  # 000005 is a test image
    Image.fromarray(np.zeros((100, 80, 3), np.uint8)).save(images / "000004.jpg")
    train = open_source("celeba", "train", str(tmp_path))
    train[0]  # the others still read
    with pytest.raises(ValueError, match=f"{named(images / '000004.jpg')}.*178x218.*got 80x100"):
        train[1]
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(ValueError, match=f"{named(tmp_path / 'list_eval_partition.txt')}:2: expected"):
        open_source("celeba", "train", str(tmp_path))


# --- CUBICC --------------------------------------------------------------------------------------

CUBICC_CLASSES = ["Blackbird", "Gull", "Jay", "Oriole", "Tanager", "Tern", "Warbler", "Wren"]


def write_cubicc(directory, kind="float", n=10, seed=5, captions=True):
    """images.pt, labels.pt, (captions.pt), {train,validation,test}_split.npy; returns the truth."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, n)
    labels[:8] = np.arange(8)  # every species present
    chw = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    images = {"float": chw.float() / 255, "uint8_chw": chw, "uint8_hwc": torch.from_numpy(pixels)}[kind]
    torch.save(images, directory / "images.pt")
    torch.save(torch.from_numpy(labels), directory / "labels.pt")
    if captions:
        torch.save(torch.zeros(n, 16, dtype=torch.long), directory / "captions.pt")
    perm = rng.permutation(n)
    parts = {"train": perm[:5], "validation": perm[5:7], "test": perm[7:]}
    for name, idx in parts.items():
        np.save(directory / f"{name}_split.npy", idx)
    return pixels, labels, {"train": parts["train"], "test": np.concatenate([parts["test"], parts["validation"]])}


@pytest.mark.parametrize("kind, nested", [("float", False), ("uint8_chw", True), ("uint8_hwc", False)])
def test_cubicc_splits_and_exact_pixels(tmp_path, kind, nested):
    pixels, labels, index = write_cubicc(tmp_path / "CUBICC" if nested else tmp_path, kind, captions=nested)
    for split in ("train", "test"):
        data = open_source("cubicc", split, str(tmp_path))
        assert isinstance(data, ArraySplit) and data.name == f"cubicc/{split}" and data.classes == CUBICC_CLASSES
        assert data.arrays.images.shape == (len(index[split]), 64, 64, 3) and data.arrays.images.dtype == np.uint8
        np.testing.assert_array_equal(data.arrays.images, pixels[index[split]])
        np.testing.assert_array_equal(data.arrays.labels, labels[index[split]])
        check_keys(data, [f"{i:06d}" for i in index[split]])
    assert len(open_source("cubicc", "test", str(tmp_path))) == 5  # test (3) then validation (2)


def test_cubicc_float_images_are_rounded(tmp_path):
    import torch

    _, _, index = write_cubicc(tmp_path, "float")
    values = torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    first = int(index["train"][0])  # the first image of the train split: edge values in its top row, red
    values[first, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.4 / 255, 254.6 / 255])
    torch.save(values, tmp_path / "images.pt")
    scaled = values.numpy().astype(np.float64) * 255
    expected = np.clip(np.rint(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)[index["train"]]
    assert (np.floor(scaled).astype(np.uint8).transpose(0, 2, 3, 1)[index["train"]] != expected).any()  # not truncation
    images = open_source("cubicc", "train", str(tmp_path)).arrays.images
    np.testing.assert_array_equal(images, expected)
    assert [int(v) for v in images[0, 0, :4, 0]] == [0, 255, 0, 255]


def test_cubicc_errors(tmp_path):
    import torch

    with pytest.raises(FileNotFoundError, match=named(tmp_path / "nowhere")):
        open_source("cubicc", "train", str(tmp_path / "nowhere"))
    _, labels, _ = write_cubicc(tmp_path)
    (tmp_path / "test_split.npy").unlink()
    with pytest.raises(FileNotFoundError, match=f"{named(tmp_path)}: missing test_split.npy"):
        open_source("cubicc", "test", str(tmp_path))
    write_cubicc(tmp_path)
    labels[3] = 8
    torch.save(torch.from_numpy(labels), tmp_path / "labels.pt")
    with pytest.raises(ValueError, match=f"{named(tmp_path / 'labels.pt')}: labels must be in 0..7.*got 0..8"):
        open_source("cubicc", "train", str(tmp_path))
    write_cubicc(tmp_path)
    torch.save(torch.full((10, 3, 64, 64), 255.0), tmp_path / "images.pt")  # floats in 0..255, not [0, 1]
    with pytest.raises(ValueError, match=f"{named(tmp_path / 'images.pt')}: float images must be in \\[0, 1\\]"):
        open_source("cubicc", "train", str(tmp_path))
    write_cubicc(tmp_path)
    np.save(tmp_path / "validation_split.npy", np.array([2, 10]))
    with pytest.raises(ValueError, match=f"{named(tmp_path / 'validation_split.npy')}: indices must be in 0..9"):
        open_source("cubicc", "test", str(tmp_path))
    (tmp_path / "images.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match=named(tmp_path / "images.pt")):
        open_source("cubicc", "train", str(tmp_path))


# --- image folder --------------------------------------------------------------------------------


def write_folder(root, seed=7):
    """train/{bird,cat,dog}, test/{cat,dog}: PNG, BMP, JPEG (upper-case suffix), grayscale, nested,
    a repeated stem, dots and spaces in names and a non-image file. Returns {split: {key: (file, label)}}."""
    rng = np.random.default_rng(seed)

    def put(rel, shape, fmt=None):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, format=fmt)
        return path

    train = {"bird_g": (put("train/bird/g.png", (6, 5)), 0),  # grayscale
             "cat_a": (put("train/cat/a.bmp", (4, 6, 3)), 1),
             "cat_a-1": (put("train/cat/a.png", (5, 7, 3)), 1),  # same stem as a.bmp
             "cat_img_01": (put("train/cat/img.01.png", (3, 3, 3)), 1),
             "cat_sub_x": (put("train/cat/sub/x.png", (8, 2, 3)), 1),  # nested
             "dog_Photo_1": (put("train/dog/Photo 1.JPG", (16, 16, 3), "JPEG"), 2)}
    (root / "train/cat/notes.txt").write_text("not an image")
    test = {"cat_t": (put("test/cat/t.png", (4, 4, 3)), 1), "dog_u": (put("test/dog/u.png", (4, 4, 3)), 2)}
    return {"train": train, "test": test}


def pil_decode(path, mode):
    with Image.open(path) as im:
        out = np.asarray(im.convert(mode))
    return out[..., None] if out.ndim == 2 else out


def test_folder_classes_keys_and_exact_pixels(tmp_path):
    truth = write_folder(tmp_path)
    for split in ("train", "test"):
        data = open_source("folder", split, str(tmp_path))
        assert isinstance(data, FileSplit) and data.name == f"folder/{split}"
        assert data.classes == ["bird", "cat", "dog"]  # test has no bird: the numbering is shared
        check_keys(data, list(truth[split]))
        for s in data:
            path, label = truth[split][s.key]
            assert s.label == label and s.image.dtype == np.uint8 and s.image.shape[2] == 3
            np.testing.assert_array_equal(s.image, pil_decode(path, "RGB"))
    train = open_source("folder", "train", str(tmp_path))
    bird = train[0].image  # L -> RGB repeats the grey level
    with Image.open(truth["train"]["bird_g"][0]) as im:
        np.testing.assert_array_equal(bird, np.repeat(np.asarray(im)[..., None], 3, axis=2))
    with Image.open(truth["train"]["cat_a-1"][0]) as im:  # a lossless file: exactly what was written
        np.testing.assert_array_equal(train[2].image, np.asarray(im))
    with pytest.raises(ValueError, match="different shapes"):
        load_source("folder", "train", str(tmp_path))
    assert load_source("folder", "test", str(tmp_path)).images.shape == (2, 4, 4, 3)


def test_folder_grayscale_mode(tmp_path):
    truth = write_folder(tmp_path)
    data = open_folder(tmp_path, "train", mode="L")
    for s in data:
        assert s.image.ndim == 3 and s.image.shape[2] == 1
        np.testing.assert_array_equal(s.image, pil_decode(truth["train"][s.key][0], "L"))
    with pytest.raises(ValueError, match="'RGBA'"):
        open_folder(tmp_path, "train", mode="RGBA")


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "nowhere")):
        open_source("folder", "train", str(tmp_path / "nowhere"))
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{named(tmp_path / 'test')}.*<class>/<images>"):
        open_source("folder", "test", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "train")):  # no class directory at all
        open_source("folder", "train", str(tmp_path))
    write_folder(tmp_path)
    (tmp_path / "train/emu").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{named(tmp_path / 'train')}.*emu"):
        open_source("folder", "train", str(tmp_path))
    assert open_source("folder", "test", str(tmp_path)).classes == ["bird", "cat", "dog", "emu"]  # shared numbering


# --- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "celeba", "cubicc", "folder"])
def test_registered_and_root_required(name):
    assert name in SOURCES
    with pytest.raises(ValueError, match=f"{name}: a root directory .*data.root"):
        open_source(name, "train")
