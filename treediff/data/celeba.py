"""CelebA, aligned and cropped: img_align_celeba/*.jpg plus list_eval_partition.txt.

Layout: `<root>/img_align_celeba/000001.jpg` .. (202,599 JPEGs of 178x218 pixels) and
`<root>/list_eval_partition.txt`, one line per image, "000001.jpg 0" (0 = train, 1 = valid,
2 = test). torchvision's layout `<root>/celeba/{img_align_celeba,list_eval_partition.txt}` is
accepted too. Images are decoded on access (a FileSplit), unlabelled.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .split import FileSplit, Split

IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
TORCHVISION_DIR = "celeba"
# The reference implementation trains on partition 0 and evaluates on partition 2 (torchvision's
# split="train" / split="test"); partition 1 ("valid") is used by neither split.
SPLIT_PARTITION = {"train": 0, "test": 2}
ALIGNED_SIZE = (178, 218)  # (width, height) of every aligned CelebA image
# The "WAE" crop of the reference: the 148x148 square at left=15, top=40, i.e. PIL's box
# (left, upper, right, lower) = (15, 40, 163, 188).
CROP_BOX = (15, 40, 15 + 148, 40 + 148)
IMAGE_SIZE = 64


def load_celeba_image(path: str | Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """One aligned CelebA image -> uint8 (size, size, 3): the reference's crop, then resize.

    The reference applies `T.functional.crop(x, left=15, top=40, width=148, height=148)` and
    `T.Resize([64, 64], antialias=True)` to the PIL image; on PIL images torchvision delegates both
    to PIL (`Image.crop`, then `Image.resize` with BILINEAR, PIL's default antialiased filter), so
    calling PIL directly here gives exactly the reference's pixels without importing torchvision.
    """
    path = Path(path)
    with Image.open(path) as im:
        if im.size != ALIGNED_SIZE:
            raise ValueError(f"{path}: an aligned CelebA image must be {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]} "
                             f"(width x height), got {im.size[0]}x{im.size[1]}; the crop box {CROP_BOX} "
                             f"assumes that size")
        out = im.convert("RGB").crop(CROP_BOX).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def find_celeba_dir(root: str | Path) -> Path:
    """`root` when it holds img_align_celeba/ and list_eval_partition.txt, else torchvision's <root>/celeba."""
    root = Path(root)
    expected = f"{IMAGE_DIR}/ and {PARTITION_FILE} in {root} or in {root / TORCHVISION_DIR}"
    if not root.is_dir():
        raise FileNotFoundError(f"celeba: data directory not found: {root} (expected {expected})")
    candidates = (root, root / TORCHVISION_DIR)
    for directory in candidates:
        if (directory / IMAGE_DIR).is_dir() and (directory / PARTITION_FILE).is_file():
            return directory
    for directory in candidates:  # half a layout: name the half that is missing
        has_images, has_partition = (directory / IMAGE_DIR).is_dir(), (directory / PARTITION_FILE).is_file()
        if has_images or has_partition:
            missing = directory / (PARTITION_FILE if has_images else IMAGE_DIR)
            raise FileNotFoundError(f"celeba: {missing} not found (expected {expected})")
    raise FileNotFoundError(f"celeba: no CelebA data in {root}: expected {expected}")


def read_partition(path: str | Path) -> list[tuple[str, int]]:
    """The (image file name, partition) lines of list_eval_partition.txt, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CelebA partition file not found: {path}")
    entries, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{lineno}: expected '<image file> <partition 0, 1 or 2>', "
                                 f"got {line.rstrip()!r}")
            name = fields[0]
            stem = Path(name).stem
            if stem in seen:
                raise ValueError(f"{path}:{lineno}: image {name} is listed twice")
            seen.add(stem)
            entries.append((name, int(fields[1])))
    return entries


def open_celeba(root: str | Path, split: str, size: int = IMAGE_SIZE) -> Split:
    """CelebA `split` as a FileSplit named "celeba/<split>": train = partition 0, test = partition 2.

    (That train/test choice is the reference implementation's; partition 1 is unused.) Images
    are (size, size, 3) uint8 after the reference's crop and resize (`load_celeba_image`), with no
    labels (classes []); keys are the file stems ("000001"). The directory and the partition file
    are checked here, and every listed image of the split must exist in img_align_celeba/.
    """
    if split not in SPLIT_PARTITION:
        raise ValueError(f"celeba: unknown split {split!r} (train or test)")
    directory = find_celeba_dir(root)
    partition_path, image_dir = directory / PARTITION_FILE, directory / IMAGE_DIR
    names = [name for name, part in read_partition(partition_path) if part == SPLIT_PARTITION[split]]
    present = set(os.listdir(image_dir))  # one directory listing, not 200k stat calls
    missing = [name for name in names if name not in present]
    if missing:
        shown = ", ".join(str(image_dir / m) for m in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"celeba: {len(missing)} image(s) listed in {partition_path} for split {split!r} "
                                f"are missing: {shown}")
    return FileSplit([image_dir / n for n in names], None, [], f"celeba/{split}",
                     partial(load_celeba_image, size=size))  # a partial pickles (worker processes)
