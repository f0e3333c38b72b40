"""CNN-TreeVAE: model, ELBO, growth rules and the single-process phase trainer."""
from .config import GrowthConfig, OptimConfig, TreeVAEConfig
from .model import Generation, TreeOutput, TreeVAE

__all__ = ["GrowthConfig", "OptimConfig", "TreeVAEConfig", "Generation", "TreeOutput", "TreeVAE"]
