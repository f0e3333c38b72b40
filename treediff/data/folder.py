"""A generic image folder: `<root>/<split>/<class name>/<image files>`, as torchvision's ImageFolder.

Classes are the sub-directories of `<root>/train` and `<root>/test`, sorted by name (label =
position in the sorted union, the same for both splits); files are found by torchvision's own
`find_classes` / `make_dataset` with its IMG_EXTENSIONS (nested sub-directories of a class are
included). Images are decoded with PIL on access (a FileSplit) and may differ in size.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .split import FileSplit, Split

SPLITS = ("train", "test")
MODES = {"RGB": 3, "L": 1}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def load_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """An image file -> uint8 (H, W, 3) for mode "RGB" or (H, W, 1) for mode "L" (PIL's conversion)."""
    with Image.open(path) as im:
        pixels = np.asarray(im.convert(mode), dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def safe_key(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9_-] replaced by "_" (WebDataset splits keys at dots)."""
    return _UNSAFE.sub("_", text)


def unique_keys(bases: list[str]) -> list[str]:
    """`bases` made unique in order: a repeat of an earlier key gets "-1", "-2", ... appended."""
    keys, seen = [], set()
    for base in bases:
        key, n = base, 0
        while key in seen:
            n += 1
            key = f"{base}-{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _other_classes(directory: Path) -> list[str]:
    """The class directories of the other split, none where it is absent or empty (its own open says so)."""
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(directory)[0] if directory.is_dir() else []
    except FileNotFoundError:
        return []


def open_folder(root: str | Path, split: str, mode: str = "RGB") -> Split:
    """`<root>/<split>/<class>/...` as a FileSplit named "folder/<split>" (labels = sorted class index).

    The classes are the sorted union of the class directories of <root>/train and <root>/test,
    so both splits share one numbering even when a class is missing from one of them.

    Keys are f"{class}/{path in the class directory without suffix}" with every character outside
    [A-Za-z0-9_-] (the "/" included) replaced by "_", made unique by "-1", "-2", ... suffixes in
    (sorted) file order: "cat/img.01.png" -> "cat_img_01".
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if split not in SPLITS:
        raise ValueError(f"folder: unknown split {split!r} (train or test)")
    if mode not in MODES:
        raise ValueError(f"folder: unknown image mode {mode!r} (one of {', '.join(MODES)})")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"folder: data directory not found: {root} (expected {root}/{split}/<class>/<images>)")
    directory = root / split
    if not directory.is_dir():
        raise FileNotFoundError(f"folder: split directory not found: {directory} "
                                f"(expected {root}/{split}/<class>/<images>)")
    # The classes are the union over the split directories present, so that a class missing from one
    # split does not shift the labels of the other (torchvision's ImageFolder numbers each directory alone).
    try:
        own = find_classes(directory)[0]
        classes = sorted(set(own).union(*(_other_classes(root / s) for s in SPLITS if s != split)))
        class_to_idx = {c: classes.index(c) for c in own}
        samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # no class directory, or a class without images: name the directory
        raise FileNotFoundError(f"folder: {directory}: {e} (expected {directory}/<class>/<images>)") from e
    paths = [Path(p) for p, _ in samples]
    labels = [label for _, label in samples]
    bases = [safe_key(f"{classes[label]}/{path.relative_to(directory / classes[label]).with_suffix('')}")
             for path, label in zip(paths, labels)]
    return FileSplit(paths, labels, classes, f"folder/{split}", partial(load_image, mode=mode), unique_keys(bases))
