"""CUBICC (Palumbo et al.), as packed for the TreeDiffusion reference code: torch tensors + index arrays.

Layout under `<root>` (or `<root>/CUBICC`, the reference's `./data/CUBICC`): `images.pt` (all
images: float in [0, 1] (N, 3, 64, 64), uint8 (N, 3, 64, 64) or uint8 (N, 64, 64, 3)),
`labels.pt` (N int class ids 0..7), `train_split.npy`, `validation_split.npy`, `test_split.npy`
(int index arrays into images/labels). `captions.pt` (and the reference's unused
`train_test_labelling.pt`, `original_labels.pt`) are ignored.

torch is imported on use, so that importing the registry stays cheap.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .arrays import ImageArrays
from .split import ArraySplit, Split

if TYPE_CHECKING:
    import torch

SUBDIR = "CUBICC"
IMAGES, LABELS = "images.pt", "labels.pt"
SPLIT_FILES = {"train": "train_split.npy", "validation": "validation_split.npy", "test": "test_split.npy"}
# train = the train indices; test = test then validation indices, concatenated in that order (the
# reference's CUBICCDataset does np.concatenate((test_split, validation_split))).
SPLIT_PARTS = {"train": ("train",), "test": ("test", "validation")}
# The 8 bird species of CUBICC, label ids 0..7. The reference config (configs/cubicc.yml) says
# num_clusters_data: 10, a known defect: labels.pt only holds 0..7.
CUBICC_CLASSES = ["Blackbird", "Gull", "Jay", "Oriole", "Tanager", "Tern", "Warbler", "Wren"]
REQUIRED = (IMAGES, LABELS, *SPLIT_FILES.values())
CHUNK = 1024  # images converted at a time
FLOAT_SLACK = 1e-3  # float pixels may stray this far outside [0, 1] (rounding noise) before we refuse them


def find_cubicc_dir(root: str | Path) -> Path:
    """`root` when it holds images.pt, else <root>/CUBICC where that directory exists."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cubicc: data directory not found: {root} (expected {', '.join(REQUIRED)} "
                                f"in it or in {root / SUBDIR})")
    nested = root / SUBDIR
    return nested if not (root / IMAGES).is_file() and nested.is_dir() else root


def _load_tensor(path: Path) -> torch.Tensor:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable torch tensor file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: expected a torch tensor, got {type(obj).__name__}")
    return obj


def images_to_uint8(images: torch.Tensor | np.ndarray, path: str | Path = IMAGES) -> np.ndarray:
    """(N, C, H, W) or (N, H, W, C) images, uint8 or float in [0, 1] -> uint8 (N, H, W, C).

    Float pixels become round(x * 255), clipped to 0..255: the exact inverse of the usual
    uint8 / 255 storage. (The reference goes through `F.to_pil_image`, which truncates `x * 255`
    instead: the same for floats stored as k / 255, which survive float32 exactly, but one grey
    level lower for about half of any other values.)
    """
    if not isinstance(images, np.ndarray):  # a torch tensor (float16 / bfloat16 have no NumPy view)
        x = (images.float() if images.is_floating_point() and images.element_size() == 2 else images).numpy()
    else:
        x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"{path}: images must be 4-D (N, C, H, W) or (N, H, W, C), got shape {x.shape}")
    if x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # channels first, the torch convention (preferred when ambiguous)
    elif x.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: images must have 1 or 3 channels first or last, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{path}: images must be uint8 or float in [0, 1], got {x.dtype}")
    if x.size and not np.isfinite(x).all():
        raise ValueError(f"{path}: float images contain NaN or infinity")
    if x.size and (x.min() < -FLOAT_SLACK or x.max() > 1 + FLOAT_SLACK):
        raise ValueError(f"{path}: float images must be in [0, 1], got {float(x.min()):.4g}..{float(x.max()):.4g}")
    out = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), CHUNK):  # float64 products, a chunk at a time to bound memory
        out[start:start + CHUNK] = np.clip(np.rint(x[start:start + CHUNK].astype(np.float64) * 255.0), 0, 255)
    return out


def _read_indices(path: Path, n: int) -> np.ndarray:
    try:
        idx = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy index array ({e})") from e
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError(f"{path}: expected a 1-D integer index array, got {idx.dtype} of shape {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{path}: indices must be in 0..{n - 1} ({n} images), got {int(idx.min())}..{int(idx.max())}")
    return idx


def open_cubicc(root: str | Path, split: str) -> Split:
    """CUBICC `split` as an ArraySplit named "cubicc/<split>" of uint8 (64, 64, 3) images, labels 0..7.

    train = train_split.npy; test = test_split.npy then validation_split.npy (the reference's
    choice). Keys are f"{index:06d}", the image's index into images.pt.
    """
    import torch  # here, so that importing the registry does not import torch

    if split not in SPLIT_PARTS:
        raise ValueError(f"cubicc: unknown split {split!r} (train or test)")
    directory = find_cubicc_dir(root)
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: missing {', '.join(missing)}; expected the packed CUBICC files "
                                f"{', '.join(REQUIRED)} in {Path(root)} or {Path(root) / SUBDIR}")
    images_path, labels_path = directory / IMAGES, directory / LABELS
    images, labels = _load_tensor(images_path), _load_tensor(labels_path)
    if images.ndim != 4:
        raise ValueError(f"{images_path}: images must be 4-D (N, C, H, W) or (N, H, W, C), "
                         f"got shape {tuple(images.shape)}")
    n = images.shape[0]
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{labels_path}: labels must be a 1-D integer tensor, got {labels.dtype} "
                         f"of shape {tuple(labels.shape)}")
    if len(labels) != n:
        raise ValueError(f"{directory}: {n} images in {IMAGES} but {len(labels)} labels in {LABELS}")
    labels = labels.numpy().astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CUBICC_CLASSES)):
        raise ValueError(f"{labels_path}: labels must be in 0..{len(CUBICC_CLASSES) - 1} "
                         f"({len(CUBICC_CLASSES)} species), got {int(labels.min())}..{int(labels.max())}")
    parts = [(directory / SPLIT_FILES[p]) for p in SPLIT_PARTS[split]]
    index = np.concatenate([_read_indices(path, n) for path in parts])
    if len(np.unique(index)) != len(index):
        raise ValueError(f"cubicc: split {split!r} lists an image twice in {', '.join(str(p) for p in parts)}")
    pixels = images_to_uint8(images[torch.from_numpy(index)], images_path)
    arrays = ImageArrays(pixels, labels[index], list(CUBICC_CLASSES), f"cubicc/{split}")
    return ArraySplit(arrays, [f"{i:06d}" for i in index])
