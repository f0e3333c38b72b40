"""treediff: the science layer (plain PyTorch): tree topology, CNN-TreeVAE and its growth,
diffusion, metrics and data formats. Never imports ray, deepspeed or hydra."""
__version__ = "0.1.0"
