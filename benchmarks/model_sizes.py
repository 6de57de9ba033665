"""Parameters and training FLOPs of the text model presets at the vocabulary and sequence length of their papers.

    python -m benchmarks.model_sizes

Builds each preset from its config on the meta device (shapes only: instant, no memory) and prints its parameter
count and ``train_flops_per_example() / seq_len`` (forward + backward FLOPs per token, models/transformer.py).
"""
from __future__ import annotations

import torch

from benchmarks.common import print_table
from research_optim.build import build_model
from research_optim.data.base import DataSpec, Dataset

PRESETS = [("llama_60m", 32000, 256), ("llama_130m", 32000, 256), ("llama_350m", 32000, 256),
           ("gpt2_small", 50257, 1024)]


def main() -> None:
    from hydra import compose, initialize_config_dir

    from research_optim.app import CONFIG_DIR

    rows = []
    for preset, vocab, seq_len in PRESETS:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            node = compose("config", [f"model={preset}"]).model
        with torch.device("meta"):
            model = build_model(node, Dataset(DataSpec("lm", (seq_len,), vocab), train=None, val=None))
        params = sum(p.numel() for p in model.parameters())
        rows.append([preset, str(vocab), str(seq_len), f"{params:,}",
                     f"{model.train_flops_per_example() / seq_len / 1e9:.3f}"])
    print_table(["model", "vocabulary", "seq_len", "parameters", "GFLOP / training token"], rows)


if __name__ == "__main__":
    main()
