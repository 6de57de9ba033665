"""scikit-learn's handwritten digits (8×8, 10 classes): real data shipped inside a dependency, no network."""
from __future__ import annotations

import torch

from research_optim.data.base import DataSpec, Dataset, TensorDataset


def load_digits(val_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """1797 images as (1, 8, 8) float tensors scaled to [0, 1]; a fixed stratification-free random split."""
    from sklearn.datasets import load_digits as sk_load_digits

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    raw = sk_load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_val = int(round(len(x) * val_fraction))
    val, train = perm[:n_val], perm[n_val:]
    spec = DataSpec(task="classification", input_shape=(1, 8, 8), num_classes=10)
    return Dataset(spec=spec, train=TensorDataset(x[train], y[train]), val=TensorDataset(x[val], y[val]), name="digits")
