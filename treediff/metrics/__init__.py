"""Evaluation metrics (clustering quality of a tree; FID and purity come later)."""
