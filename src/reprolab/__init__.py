"""reprolab: a reproducible before/after experiment pipeline for PyTorch sequence models."""

__version__ = "0.1.0"
