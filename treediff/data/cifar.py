"""CIFAR-10, "python version": the pickled batches of cifar-10-batches-py/.

Layout: `data_batch_1` .. `data_batch_5` (train, 10,000 images each), `test_batch` (test) and
`batches.meta`. Each batch is a protocol-2 pickle written by Python 2 of a dict with (byte-string)
keys b"data": uint8 (N, 3072) (1024 red, 1024 green, 1024 blue values, each a row-major 32x32
plane), b"labels": N ints in 0..9 and b"filenames": N byte strings. batches.meta holds
b"label_names". The pickles are read with a restricted unpickler that only resolves the few
globals a NumPy array needs, so a batch cannot run arbitrary code.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import ImageArrays
from .split import ArraySplit, Split

BATCH_DIR = "cifar-10-batches-py"
META = "batches.meta"
SPLIT_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIDE = 32
PIXELS = 3 * SIDE * SIDE

# The globals a pickled uint8 ndarray refers to: Python 2 / NumPy 1 (numpy.core), NumPy 2 (numpy._core),
# protocol 2 from Python 3 (bytes via _codecs.encode) and protocol 5 (_frombuffer).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *((f"{m}.multiarray", n) for m in ("numpy.core", "numpy._core") for n in ("_reconstruct", "scalar")),
    *((f"{m}.numeric", "_frombuffer") for m in ("numpy.core", "numpy._core")),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """The dict in a (Python 2) pickle, keys as bytes (str keys of a Python 3 rewrite are encoded)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError) as e:
        raise ValueError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR pickle must hold a dict, got {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def find_cifar10_dir(root: str | Path) -> Path:
    """`root` itself when it holds the batches, else torchvision's <root>/cifar-10-batches-py."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cifar10: data directory not found: {root} (expected the CIFAR-10 python "
                                f"batches in it or in {root}/{BATCH_DIR})")
    nested = root / BATCH_DIR
    return nested if nested.is_dir() else root


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> uint8 (N, 32, 32, 3) images (HWC) and int64 (N,) labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch not found: {path}")
    batch = _unpickle(path)
    for key in (b"data", b"labels"):
        if key not in batch:
            raise ValueError(f"{path}: missing key {key!r} (found {sorted(batch)})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, {PIXELS}), got {what}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{path}: b'labels' must be a list of integers ({e})") from e
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but b'labels' of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"{path}: labels must be in 0..{len(CIFAR10_CLASSES) - 1}, "
                         f"got {int(labels.min())}..{int(labels.max())}")
    # (N, 3072) = (N, channel, row, column) planes -> (N, row, column, channel)
    images = np.ascontiguousarray(data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1))
    return images, labels


def read_cifar10_classes(directory: str | Path) -> list[str]:
    """The class names of batches.meta (b"label_names"), or the standard ten when the file is absent."""
    path = Path(directory) / META
    if not path.is_file():
        return list(CIFAR10_CLASSES)
    names = _unpickle(path).get(b"label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES):
        raise ValueError(f"{path}: b'label_names' must be a list of {len(CIFAR10_CLASSES)} names, got {names!r:.200}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def open_cifar10(root: str | Path, split: str) -> Split:
    """CIFAR-10 `split` ("train": data_batch_1..5, "test": test_batch) as an ArraySplit named "cifar10/<split>".

    Keys are f"{batch file}-{index in batch:05d}" ("data_batch_3-00042").
    """
    if split not in SPLIT_BATCHES:
        raise ValueError(f"cifar10: unknown split {split!r} (train or test)")
    directory = find_cifar10_dir(root)
    root = Path(root)
    names = SPLIT_BATCHES[split]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: missing {', '.join(missing)} for split {split!r}; expected the "
                                f"CIFAR-10 python batches {', '.join(names)} in {root} or {root / BATCH_DIR}")
    classes = read_cifar10_classes(directory)
    images, labels, keys = [], [], []
    for name in names:
        x, y = read_cifar10_batch(directory / name)
        images.append(x)
        labels.append(y)
        keys += [f"{name}-{i:05d}" for i in range(len(x))]
    arrays = ImageArrays(np.concatenate(images), np.concatenate(labels), classes, f"cifar10/{split}")
    return ArraySplit(arrays, keys)
