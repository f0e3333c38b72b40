"""Training stages as small objects that any runtime can drive (a plain loop here, Ray Train +
DeepSpeed in cluster/): build the model, say which parameters train, give the loss of a batch.

A stage never asks which rank it runs on: the runtime hands it a seed (`setup`) and batches.
"""
from .base import Stage, run_plain
from .diffusion import DiffusionStage
from .tree import TreePhaseStage

__all__ = ["Stage", "run_plain", "TreePhaseStage", "DiffusionStage"]
