"""WebDataset shard sets: writing them from a Split, their manifest, and checking them.

A shard set is a directory:

    manifest.json         what is there: counts per shard and split, image shape, classes,
                          sha256 per shard, the source, samples per shard, the shuffle seed
    train-000000.tar ...  WebDataset tar shards: <key>.png (lossless, grey "L" or "RGB") and,
    test-000000.tar  ...  for labelled data, <key>.cls (the class index as text)

`write_shard_set` writes the whole set into a temporary sibling directory and renames it into
place when every shard and the manifest are complete, so an interrupted run never leaves a
directory that looks like a complete set; an existing complete set is only replaced when
asked (`overwrite=True`), and then only after the new one is complete.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from ..checkpoint import move_into_place, sha256_file
from .split import Split

MANIFEST = "manifest.json"
FORMAT = "treediff-shards/1"
SPLITS = ("train", "test")


class ShardError(ValueError):
    """A shard is missing, corrupt, truncated or differs from its manifest (the message names it)."""


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 1|3) -> PNG bytes (lossless)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"encode_png: expected uint8 (H, W, 1|3), got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes, channels: int) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, channels)."""
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        array = np.array(img, dtype=np.uint8)  # a writable copy
    return array[..., None] if channels == 1 else array


def _safe_key(key: str) -> str:
    """WebDataset splits a file name at its first dot: keys must not contain dots or slashes."""
    bad = set(".,/\\ ") & set(key)
    if bad:
        raise ValueError(f"sample key {key!r} contains {sorted(bad)}; keys must be file-name stems without dots")
    return key


def _write_split(split: Split, directory: Path, prefix: str, samples_per_shard: int, order: np.ndarray,
                 progress: Callable[[int], None]) -> tuple[list[dict[str, Any]], tuple[int, ...] | None]:
    """Write `split` in `order` into prefix-NNNNNN.tar shards; returns shard records and the image shape."""
    import webdataset as wds

    shards: list[dict[str, Any]] = []
    shape: tuple[int, ...] | None = None
    keys: set[str] = set()
    for start in range(0, len(order), samples_per_shard):
        name = f"{prefix}-{len(shards):06d}.tar"
        chunk = order[start:start + samples_per_shard]
        with wds.TarWriter(str(directory / name)) as sink:
            for i in chunk:
                sample = split[int(i)]
                if shape is None:
                    shape = tuple(sample.image.shape)
                elif tuple(sample.image.shape) != shape:
                    raise ValueError(f"{split.name}: sample {sample.key!r} has shape {sample.image.shape}, "
                                     f"the others {shape}; shards need one image shape (set data.image_size to "
                                     f"crop and resize them to one square size)")
                key = _safe_key(sample.key)
                if key in keys:
                    raise ValueError(f"{split.name}: duplicate sample key {key!r}")
                keys.add(key)
                record = {"__key__": key, "png": encode_png(sample.image)}
                if sample.label is not None:
                    record["cls"] = str(int(sample.label)).encode()
                sink.write(record)
                progress(1)
        shards.append({"name": name, "count": int(len(chunk)), "sha256": sha256_file(directory / name)})
    return shards, shape


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Remove `.tmp-<name>-<pid>-*` directories left by killed runs (their pid no longer exists)."""
    for tmp in out_dir.parent.glob(f".tmp-{out_dir.name}-*-*"):
        pid = tmp.name[len(f".tmp-{out_dir.name}-"):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def write_shard_set(splits: dict[str, Split], out_dir: str | Path, *, samples_per_shard: int = 1000,
                    seed: int = 0, source: dict[str, Any] | None = None, overwrite: bool = False,
                    progress: bool = True, interrupted: Callable[[], str | None] | None = None) -> Path:
    """Shuffle each split (seeded) and write it as shards plus a manifest, atomically.

    FileExistsError when `out_dir` already holds a complete set (or anything else) and not
    `overwrite`. On any failure the temporary directory is removed and `out_dir` is untouched.
    `interrupted`, polled after every image, returns a reason to stop (KeyboardInterrupt) or None.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard: must be >= 1, got {samples_per_shard}")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)} (train, test)")
    if out_dir.exists() and not overwrite:
        what = "a complete shard set" if (out_dir / MANIFEST).is_file() else "a directory that is not a shard set"
        raise FileExistsError(f"{out_dir} already holds {what}; pass overwrite=true to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-{os.getpid()}-", dir=out_dir.parent))
    total = sum(len(s) for s in splits.values())
    try:
        manifest: dict[str, Any] = {"format": FORMAT, "source": source or {}, "samples_per_shard": samples_per_shard,
                                    "seed": seed, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "splits": {}}
        shapes, classes, labelled = set(), None, None
        with tqdm(total=total, desc=f"prepare {out_dir.name}", unit="img", disable=not progress or None,
                  dynamic_ncols=True, mininterval=1.0) as bar:
            def tick(n: int) -> None:
                bar.update(n)
                reason = interrupted() if interrupted is not None else None
                if reason:
                    raise KeyboardInterrupt(f"{reason}; nothing was written to {out_dir}")

            for index, (name, split) in enumerate(sorted(splits.items())):
                order = np.random.default_rng([seed, index]).permutation(len(split))
                shards, shape = _write_split(split, tmp, name, samples_per_shard, order, tick)
                if shape is not None:
                    shapes.add(shape)
                classes = classes if classes is not None else list(split.classes)
                labelled = split.labelled if labelled is None else labelled
                manifest["splits"][name] = {"count": int(len(split)), "shards": shards}
        if len(shapes) > 1:
            raise ValueError(f"the splits have different image shapes {sorted(shapes)}")
        manifest["image_shape"] = list(shapes.pop()) if shapes else None
        manifest["classes"] = classes or []
        manifest["labelled"] = bool(labelled)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        move_into_place(tmp, out_dir)  # overwrite: the old set goes only once the new one is in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@dataclass
class ShardSet:
    """A complete shard set on disk, read through its manifest."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path, prepare_hint: str | None = None) -> "ShardSet":
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            hint = prepare_hint or f"treediff prepare data=<name> shards.path={root}"
            state = "does not exist" if not root.exists() else f"has no {MANIFEST} (not a complete shard set)"
            raise FileNotFoundError(f"shard set {root} {state}; write it with `{hint}`")
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
        return cls(root, manifest)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["image_shape"])  # (H, W, C)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def labelled(self) -> bool:
        return bool(self.manifest["labelled"])

    def digest(self) -> str:
        """sha256 of the manifest file: names this exact data in checkpoints and caches."""
        return sha256_file(self.root / MANIFEST)

    def _split(self, split: str) -> dict[str, Any]:
        if split not in self.manifest["splits"]:
            raise ValueError(f"shard set {self.root} has no split {split!r}; it has {sorted(self.manifest['splits'])}")
        return self.manifest["splits"][split]

    def count(self, split: str) -> int:
        return int(self._split(split)["count"])

    def shards(self, split: str) -> list[dict[str, Any]]:
        return list(self._split(split)["shards"])

    def urls(self, split: str) -> list[str]:
        return [str(self.root / s["name"]) for s in self.shards(split)]

    def verify(self, split: str | None = None, names: Iterable[str] | None = None) -> None:
        """Check existence and sha256 of shards (all, a split's, or the named ones) against the manifest."""
        records = [r for s in ([split] if split else self.manifest["splits"]) for r in self.shards(s)]
        if names is not None:
            wanted = {Path(n).name for n in names}
            records = [r for r in records if r["name"] in wanted]
        for r in records:
            path = self.root / r["name"]
            if not path.is_file():
                raise ShardError(f"shard {path} listed in {self.root / MANIFEST} is missing")
            digest = sha256_file(path)
            if digest != r["sha256"]:
                raise ShardError(f"shard {path} is corrupt: sha256 {digest[:16]}... differs from the manifest's "
                                 f"{r['sha256'][:16]}... (re-run `treediff prepare` with overwrite=true)")
