"""Evaluation: per-sample-seeded generation, FID chunks, leaf purity (plain PyTorch)."""
