"""The IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Layout: two zero bytes, a type byte (0x08: unsigned byte), the number of dimensions, each
dimension as a big-endian uint32, then the data in C order.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .arrays import ImageArrays

GZIP_MAGIC = b"\x1f\x8b"
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
    dtype, ndim = data[2], data[3]
    if dtype != 0x08:
        raise ValueError(f"{path}: IDX element type 0x{dtype:02x} is not supported (only 0x08, unsigned byte)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    need = int(np.prod(dims, dtype=np.int64))
    if len(data) - header < need:
        raise ValueError(f"{path}: truncated IDX data: {len(data) - header} bytes for dims {dims} ({need} needed)")
    return np.frombuffer(data, np.uint8, count=need, offset=header).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX; a `.gz` suffix compresses it."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 only, got {array.dtype}")
    payload = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{root}: missing {stem} (or {stem}.gz)")


def load_mnist_format(root: str | Path, split: str, classes: list[str] = MNIST_CLASSES,
                      name: str = "mnist") -> ImageArrays:
    """MNIST-layout directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: data directory not found: {root}")
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"{name}: unknown split {split!r} (train or test)")
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
    return ImageArrays(images[..., None], labels.astype(np.int64), list(classes), f"{name}/{split}")
