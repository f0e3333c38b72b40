"""The unit of evaluation work: a chunk of sample indices in, feature statistics out.

A farm (cluster/farm.py, or a loop in one process) runs `run_chunk` on many chunks and adds
their results up in chunk order. Only statistics travel back (FeatureStats: count, sum f,
sum f f^T in float64; class histograms; a few preview images), never the features themselves.

Kinds:
  reference   real images (uint8 NHWC slice): their features
  generation  samples routed from the tree's prior: features of the denoised samples and of the
              TreeVAE's own decodings of the same prior draws; class histograms per routed leaf
  leaf        samples of the leaf `leaf`: features and the class histogram of that leaf; from
              high-probability prior draws (min_prob set: the draw's P(leaf) >= min_prob), or
              with the leaf forced onto any prior draw (min_prob None)
  recon       reconstructions of real images (uint8 NHWC slice) through their posterior path
Generation and leaf chunks also count the classifier's classes of the TreeVAE's own decodings
(class_counts_treevae), so the report can tell the tree's part of the impurity from the denoiser's.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.tensors import to_model_range
from ..diffusion.config import SamplerConfig
from ..metrics.features import Extractor, to_uint8_rgb
from ..metrics.fid import FeatureStats, merge
from .generate import generate, generate_leaf, reconstruct

KINDS = ("reference", "generation", "leaf", "recon")
PREVIEW = 8  # samples per leaf kept for the purity plot


@dataclass
class Chunk:
    key: str  # what the driver merges this chunk into (e.g. "path/generation")
    kind: str
    indices: list[int]  # sample indices (the per-sample seeds' second half)
    extractor: dict[str, Any]  # Extractor(**extractor)
    seed: int = 0
    checkpoint: str | None = None  # a diffusion checkpoint directory
    sampler: dict[str, Any] | None = None  # SamplerConfig fields
    leaf: int | None = None
    images: np.ndarray | None = None  # uint8 (N, H, W, C): the real images of `indices`
    classifier: str | None = None  # a purity classifier directory
    n_classes: int = 0
    features: bool = True  # False: only the classifier's histograms (leaf purity without FID)
    device: str = "cpu"
    min_prob: float | None = None  # leaf chunks: keep prior draws with P(leaf) >= min_prob (None: force the leaf)
    draws: int = 64  # leaf chunks: prior draws per sample to find one

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"chunk kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("reference", "recon") and (self.images is None or len(self.images) != len(self.indices)):
            raise ValueError(f"a {self.kind} chunk needs one real image per index")
        if self.kind != "reference" and not self.checkpoint:
            raise ValueError(f"a {self.kind} chunk needs a diffusion checkpoint")


@dataclass
class ChunkResult:
    key: str
    n: int
    stats: dict[str, FeatureStats]  # "samples" (and "treevae" for generation/recon)
    class_counts: dict[int, np.ndarray] = field(default_factory=dict)  # leaf -> predicted-class histogram
    class_counts_treevae: dict[int, np.ndarray] = field(default_factory=dict)  # the same, of the TreeVAE decodings
    leaf_probs: list[float] = field(default_factory=list)  # leaf chunks from high-probability draws: each draw's P(leaf)
    preview: dict[int, torch.Tensor] = field(default_factory=dict)  # leaf -> a few uint8 samples
    preview_treevae: dict[int, torch.Tensor] = field(default_factory=dict)  # the TreeVAE decodings of the same draws
    wall_s: float = 0.0
    process: str = ""  # host:pid of the process that ran it
    loads: dict[str, int] = field(default_factory=dict)  # model loads in that process so far, by kind


_MODELS: dict[tuple, Any] = {}  # per process: loaded checkpoints, reused by later chunks
_LOADS: dict[str, int] = {}  # per process: how many times each kind of model was loaded


def _cached(key: tuple, load):
    if key not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = load()
        _LOADS[key[0]] = _LOADS.get(key[0], 0) + 1
    return _MODELS[key]


def _stamped(result: ChunkResult, start: float) -> ChunkResult:
    result.wall_s = time.perf_counter() - start
    result.process, result.loads = f"{os.uname().nodename}:{os.getpid()}", dict(_LOADS)
    return result


def _denoiser(path: str, device: str):
    from ..diffusion.trainer import load_denoiser
    return _cached(("denoiser", path, device), lambda: load_denoiser(path, device=device))


def _classifier(path: str, device: str):
    from .classifier import load_classifier
    return _cached(("classifier", path, device), lambda: load_classifier(path, device=device))


def _extractor(spec: dict[str, Any], device: str) -> Extractor:
    key = ("extractor", tuple(sorted(spec.items())), device)
    return _cached(key, lambda: Extractor(**spec, device=device))


def run_chunk(chunk: Chunk) -> ChunkResult:
    start = time.perf_counter()
    extract = _extractor(chunk.extractor, chunk.device) if chunk.features or chunk.kind == "reference" else None
    if chunk.kind == "reference":
        stats = FeatureStats.of(extract(to_uint8_rgb(to_model_range(chunk.images))))
        return _stamped(ChunkResult(chunk.key, len(chunk.indices), {"samples": stats}), start)

    denoiser, tree_model = _denoiser(chunk.checkpoint, chunk.device)
    sampler = SamplerConfig(**chunk.sampler)
    if chunk.kind == "recon":
        x, x_hat, leaves = reconstruct(denoiser, tree_model, sampler, chunk.seed, chunk.indices,
                                       to_model_range(chunk.images))
    elif chunk.kind == "leaf" and chunk.min_prob is not None:
        x, x_hat, leaves, probs = generate_leaf(denoiser, tree_model, sampler, chunk.seed, chunk.indices, chunk.leaf,
                                                chunk.min_prob, chunk.draws)
    else:
        leaf = chunk.leaf if chunk.kind == "leaf" else None
        x, x_hat, leaves = generate(denoiser, tree_model, sampler, chunk.seed, chunk.indices, leaf=leaf)
    images = to_uint8_rgb(x)
    stats = {"samples": FeatureStats.of(extract(images))} if chunk.features else {}
    if chunk.features and chunk.kind in ("generation", "recon"):
        stats["treevae"] = FeatureStats.of(extract(to_uint8_rgb(x_hat)))
    result = ChunkResult(chunk.key, len(chunk.indices), stats)
    if chunk.kind == "leaf" and chunk.min_prob is not None:
        result.leaf_probs = probs.tolist()
    if chunk.classifier and chunk.kind in ("generation", "leaf"):
        from .classifier import predict
        classifier = _classifier(chunk.classifier, chunk.device)
        predicted, predicted_treevae = predict(classifier, x).numpy(), predict(classifier, x_hat).numpy()
        for leaf in sorted(set(leaves.tolist())):
            rows = (leaves == leaf).numpy()
            result.class_counts[leaf] = np.bincount(predicted[rows], minlength=chunk.n_classes)
            result.class_counts_treevae[leaf] = np.bincount(predicted_treevae[rows], minlength=chunk.n_classes)
            result.preview[leaf] = images[torch.from_numpy(rows)][:PREVIEW]
            result.preview_treevae[leaf] = to_uint8_rgb(x_hat[torch.from_numpy(rows)][:PREVIEW])
    return _stamped(result, start)


@dataclass
class Merged:
    """All chunks of one key added up (in chunk order)."""

    key: str
    n: int
    stats: dict[str, FeatureStats]
    class_counts: dict[int, np.ndarray]
    preview: dict[int, torch.Tensor]
    wall_s: float
    class_counts_treevae: dict[int, np.ndarray] = field(default_factory=dict)
    leaf_probs: list[float] = field(default_factory=list)
    preview_treevae: dict[int, torch.Tensor] = field(default_factory=dict)


def _first(previews: list[dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Per leaf, the first PREVIEW images over the chunks (in chunk order)."""
    out: dict[int, list[torch.Tensor]] = {}
    for p in previews:
        for leaf, images in p.items():
            out.setdefault(leaf, []).append(images)
    return {leaf: torch.cat(ps)[:PREVIEW] for leaf, ps in out.items()}


def merge_results(results: list[ChunkResult]) -> Merged:
    if not results:
        raise ValueError("no chunk results to merge")
    stats = {name: merge([r.stats[name] for r in results]) for name in results[0].stats}
    counts: dict[int, np.ndarray] = {}
    counts_treevae: dict[int, np.ndarray] = {}
    for r in results:
        for leaf, c in r.class_counts.items():
            counts[leaf] = counts.get(leaf, 0) + c
        for leaf, c in r.class_counts_treevae.items():
            counts_treevae[leaf] = counts_treevae.get(leaf, 0) + c
    return Merged(results[0].key, sum(r.n for r in results), stats, counts, _first([r.preview for r in results]),
                  sum(r.wall_s for r in results), counts_treevae, [p for r in results for p in r.leaf_probs],
                  _first([r.preview_treevae for r in results]))


def split_indices(n: int, chunk_size: int, start: int = 0) -> list[list[int]]:
    """[start, start + n) in chunks of chunk_size (the last one shorter): fixed by n and chunk_size,
    never by the number of workers, so results merge in the same order for any farm size."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [list(range(i, min(i + chunk_size, start + n))) for i in range(start, start + n, chunk_size)]
