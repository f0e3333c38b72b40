"""Structured-config schema: the Hydra tree is validated against these dataclasses.

Unknown keys and wrongly typed values are rejected by OmegaConf; value checks run in the
dataclasses' __post_init__ (treediff.vae.config), each error naming its field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from cluster.config import ClusterConfig, TrainerConfig
from treediff.diffusion.config import CONDITIONINGS, DiffusionConfig, SamplerConfig
from treediff.vae.config import GrowthConfig, OptimConfig, TreeVAEConfig


@dataclass
class DataConfig:
    name: str = "digits"  # a treediff.data.sources name: digits, mnist, fashion_mnist, cifar10, celeba, cubicc, folder
    root: Optional[str] = None  # directory of the on-disk files (not needed for bundled data)
    limit_train: int = 0  # 0: all; otherwise the first N training images (quick runs)
    limit_test: int = 0

    def __post_init__(self) -> None:
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name}: must be >= 0, got {getattr(self, name)}")


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

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError("pipeline.modes: must name at least one conditioning mode")
        bad = [m for m in self.modes if m not in CONDITIONINGS]
        if bad:
            raise ValueError(f"pipeline.modes: {bad} are not conditioning modes; choose from {CONDITIONINGS}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"pipeline.modes: duplicate modes in {self.modes}")


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
    threads: int = 0  # torch intra-op threads; 0: leave torch's default

    def check_diffusion(self) -> None:
        """Cross-section checks of the diffusion stage against the tree model and the sampler.

        Called by the jobs that train or sample a denoiser (`diffuse`, `pipeline`) before any
        work, so a bad diffusion config stops the pipeline before the tree stage; `grow` alone
        does not need a diffusion config that fits the model.
        """
        self.sampler.check_against(self.diffusion)
        self.diffusion.unet_config(self.model.image_size, self.model.in_channels)


GrowJobConfig = JobConfig  # the name used before the diffusion stage existed


def register() -> None:
    ConfigStore.instance().store(name="treediff_schema", node=JobConfig)


def to_objects(cfg: DictConfig) -> JobConfig:
    """Resolve and validate: DictConfig -> dataclasses (runs every __post_init__ check)."""
    return OmegaConf.to_object(cfg)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
