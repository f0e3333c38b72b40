"""What separates photo_patches' classes: k-means(8) on a few colour statistics against k-means
on the pixels (BENCHMARKS.md, the contrastive term). Seconds on 2 cores.

    .venv/bin/python bench/photo_colour.py
"""
import numpy as np

from treediff.data.bundled import load_photo_patches
from treediff.metrics.baselines import kmeans_baseline


def grey(x: np.ndarray) -> np.ndarray:  # (N, H, W, 3) -> (N, H, W, 1)
    return x.mean(axis=-1, keepdims=True)


def normalised(x: np.ndarray) -> np.ndarray:  # each image's brightness and contrast removed
    g = grey(x)
    return (g - g.mean(axis=(1, 2, 3), keepdims=True)) / (g.std(axis=(1, 2, 3), keepdims=True) + 1e-3)


FEATURES = {
    "colour pixels (3,072 numbers)": lambda x: x,
    "grey pixels": grey,
    "mean colour (3 numbers)": lambda x: x.mean(axis=(1, 2)),
    "mean brightness (1 number)": lambda x: grey(x).mean(axis=(1, 2, 3))[:, None],
    "grey, brightness and contrast normalised": normalised,
}

if __name__ == "__main__":
    train, test = load_photo_patches("train"), load_photo_patches("test")
    xtr, xte = np.asarray(train.images, np.float32), np.asarray(test.images, np.float32)
    for name, feature in FEATURES.items():
        r = kmeans_baseline(feature(xtr), feature(xte), np.asarray(test.labels), k=8)
        print(f"k-means(8) on {name:42s} test NMI {r['nmi']:.3f}  ACC {r['acc']:.3f}")
