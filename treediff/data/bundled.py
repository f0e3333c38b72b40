"""Data sets that ship inside installed packages (no download): the embedded default."""
from __future__ import annotations

import numpy as np

from .arrays import ImageArrays

DIGITS_CLASSES = [str(i) for i in range(10)]


def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 8, 8, 1) (17 grey levels 0..16 -> 0..255) and int64 labels."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.rint(d.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int64)


def load_digits(split: str, test_fraction: float = 0.2, seed: int = 0) -> ImageArrays:
    """scikit-learn's digits (UCI optdigits), with a deterministic stratified train/test split."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"digits: unknown split {split!r} (train or test)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = _digits_uint8()
    train, test = train_test_split(np.arange(len(images)), test_size=test_fraction, stratify=labels,
                                   random_state=seed)
    pick = np.sort(train if split == "train" else test)
    return ImageArrays(images[pick], labels[pick], list(DIGITS_CLASSES), f"digits/{split}")


# ---------------------------------------------------------------- photo_patches: real colour pixels
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "china", "flower")
PATCH_SIZE = 32
TEST_STRIP = 0.25  # the right quarter of each photo is the test split's, the rest the training split's
PATCHES = {"train": 500, "test": 125}  # per photo (class): 4,000 training and 1,000 test images


def _photos() -> list[np.ndarray]:
    """The eight RGB photos (uint8 (H, W, 3)) that scikit-image and scikit-learn ship."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    return ([getattr(skimage.data, name)() for name in PHOTOS[:6]]
            + [load_sample_image(f"{name}.jpg") for name in PHOTOS[6:]])


def load_photo_patches(split: str, seed: int = 0) -> ImageArrays:
    """Random square crops of eight real photos, resized to 32 x 32 RGB; the class is the photo.

    Train and test crops come from disjoint parts of each photo (the test split's from its right
    quarter), so no test pixel is ever seen in training. Crop sides are drawn between 48 and 160
    pixels (capped by the part), resized with PIL's antialiasing box filter. The crops come in a
    random order, as CIFAR-10's batches do, so a prefix keeps every class. Deterministic in `seed`.
    """
    from PIL import Image

    if split not in PATCHES:
        raise ValueError(f"photo_patches: unknown split {split!r} (train or test)")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images, labels = [], []
    for label, photo in enumerate(_photos()):
        h, w = photo.shape[:2]
        cut = int(round(w * (1.0 - TEST_STRIP)))
        part = photo[:, :cut] if split == "train" else photo[:, cut:]
        ph, pw = part.shape[:2]
        top = min(160, ph, pw)
        for _ in range(PATCHES[split]):
            side = int(rng.integers(min(48, top), top + 1))
            r, c = int(rng.integers(0, ph - side + 1)), int(rng.integers(0, pw - side + 1))
            crop = Image.fromarray(np.ascontiguousarray(part[r:r + side, c:c + side]))
            images.append(np.asarray(crop.resize((PATCH_SIZE, PATCH_SIZE), Image.Resampling.BOX)))
            labels.append(label)
    order = rng.permutation(len(images))  # classes interleaved, so a prefix (data.limit_*) holds every class
    return ImageArrays(np.stack(images)[order], np.asarray(labels, np.int64)[order], list(PHOTOS),
                       f"photo_patches/{split}")
