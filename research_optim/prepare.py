"""``python -m research_optim.prepare data=<shard data set> [overrides]``: tokenise ``data.source`` once into
``data.shards`` (memory-mapped token shards, ``data/token_shards.py``) with ``data.tokenizer``.

The same data config then trains on the shards: ``python -m research_optim data=<the same> ...``. Preparing a
shard set that already exists with the same tokenizer and source does nothing; one made otherwise is refused.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from research_optim.app import CONFIG_DIR
from research_optim.errors import InputError, UserError


def prepare(data: DictConfig) -> dict:
    """Write the shard set ``data`` describes (or find it already written); returns its metadata."""
    from research_optim.build import instantiate
    from research_optim.data import token_shards

    if "shards" not in data or "source" not in data:
        raise InputError(f"data={data.get('name')} is not a token-shard data set (it has no data.shards and "
                         "data.source): choose one whose _target_ is research_optim.data.token_shards.load_token_shards")
    tokenizer = instantiate(data.tokenizer)
    source = OmegaConf.to_container(data.source, resolve=True)
    target = Path(data.shards).expanduser()
    if target.exists():
        if not (target / token_shards.META).is_file():
            raise InputError(f"data.shards={data.shards} exists but holds no shard set: remove it or choose "
                             "another data.shards")
        meta = token_shards.read_meta(data.shards)
        token_shards.check_prepared(meta, data.shards, tokenizer, source)
        print(f"{data.shards} is already prepared with this tokenizer and source: nothing to do")
        return meta
    started = time.perf_counter()
    print(f"tokenising {source['path']} with {tokenizer.name} into {data.shards} ...", flush=True)
    meta = token_shards.write_shards(
        data.shards, tokenizer, source, token_shards.source_documents(source),
        max_tokens={"train": source["max_train_tokens"], "val": source["max_val_tokens"]},
        shard_tokens=source["shard_tokens"])
    counts = ", ".join(f"{split} {info['tokens']:,} tokens / {info['documents']:,} documents in "
                       f"{len(info['shards'])} shard(s)" for split, info in meta["splits"].items())
    print(f"wrote {data.shards} ({meta['dtype']}): {counts}, in {time.perf_counter() - started:.0f} s")
    return meta


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        prepare(cfg.data)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
