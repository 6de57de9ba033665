"""research_optim — a research framework for studying PyTorch optimizers."""

__version__ = "0.1.0"
