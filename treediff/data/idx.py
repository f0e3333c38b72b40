"""The IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed).

Layout: two zero bytes, a type byte (0x08: unsigned byte), the number of dimensions, each
dimension as a big-endian uint32, then the data in C order.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .arrays import ImageArrays

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CLASS_SETS = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_CLASSES}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
# torchvision keeps the same files under <root>/<Name>/raw/.
TORCHVISION_DIRS = ("MNIST", "FashionMNIST")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic (whatever the suffix)."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from e


def _parse_header(path: Path, data: bytes) -> tuple[int, ...]:
    """Check magic and type; return the dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
    dtype, ndim = data[2], data[3]
    if dtype != UBYTE:
        raise ValueError(f"{path}: IDX element type 0x{dtype:02x} is not supported (only 0x08, unsigned byte)")
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dims)")
    return struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or gzip) into a uint8 array of its dims."""
    path = Path(path)
    data = _read_bytes(path)
    dims = _parse_header(path, data)
    offset = 4 + 4 * len(dims)
    need = int(np.prod(dims, dtype=np.int64))
    if len(data) - offset < need:
        raise ValueError(f"{path}: truncated IDX data: {len(data) - offset} bytes for dims {dims} "
                         f"({need} needed)")
    return np.frombuffer(data, np.uint8, count=need, offset=offset).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX; a `.gz` suffix compresses it."""
    array = np.ascontiguousarray(array)
    path = Path(path)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx({path}): only uint8 is supported, got {array.dtype}")
    payload = struct.pack(">BBBB", 0, 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def _stems(split: str) -> tuple[str, str]:
    prefix = SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _locate(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_pair(root: Path, split: str) -> tuple[Path, Path]:
    """The images and labels files of `split` in root (or torchvision's <root>/<Name>/raw/)."""
    stems = _stems(split)
    for directory in (root, *(root / name / "raw" for name in TORCHVISION_DIRS)):
        found = [_locate(directory, stem) for stem in stems]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    missing = [stem for stem in stems if _locate(root, stem) is None]
    raise FileNotFoundError(
        f"{root}: missing {', '.join(missing)} for split {split!r}; expected "
        f"{' and '.join(f'{s}[.gz]' for s in stems)} in {root} "
        f"(or in {root}/{{{','.join(TORCHVISION_DIRS)}}}/raw)")


def _class_names(classes: str | Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        if classes not in CLASS_SETS:
            raise ValueError(f"unknown class set {classes!r}; known: {', '.join(CLASS_SETS)}")
        return list(CLASS_SETS[classes])
    return list(classes)


def load_mnist_format(root: str | Path, split: str, classes: str | Sequence[str] = "mnist",
                      name: str = "mnist") -> ImageArrays:
    """MNIST-layout directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] -> (N, 28, 28, 1).

    `classes` is "mnist" ("0".."9"), "fashion_mnist" (the Fashion-MNIST names) or a list of names.
    """
    if split not in SPLIT_PREFIX:
        raise ValueError(f"{name}: unknown split {split!r} (train or test)")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: data directory not found: {root}")
    images_path, labels_path = _find_pair(root, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: images must be 3-D (N, H, W), got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: labels must be 1-D (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{root}: {split} images and labels do not match: {len(images)} images in "
                         f"{images_path.name}, {len(labels)} labels in {labels_path.name}")
    return ImageArrays(images[..., None], labels.astype(np.int64), _class_names(classes), f"{name}/{split}")
