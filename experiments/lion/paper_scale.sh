#!/usr/bin/env bash
# Lion at paper scale (Chen et al. 2023): the run.sh protocol — AdamW and Lion over one matched space, 32 trials,
# 5 fresh seeds; the batch study at equal examples seen, each batch size tuned (16 trials) — on language modelling,
# GPT-2 small on OpenWebText (1.3B tokens: batch 128 x 1024 tokens x 10k steps; the batch study at 32, 128 and 512
# sequences for 40k, 10k and 2.5k steps). Needs the tokenised corpus: python -m research_optim.prepare data=openwebtext
#   PARTITION=gpu bash experiments/lion/paper_scale.sh
#   PAPER_DRY=1 bash experiments/lion/paper_scale.sh       # the dry run (tests/test_studies.py)
# Not here: the paper's headline ViT-on-ImageNet results. Under this protocol (74 runs of ViT-S, 90 epochs) at about
# 50 GPU-hours per run (DeiT-S: ~3 days on 8 V100s for 300 epochs, scaled) that is ~3700 GPU-hours, and a tuning trial
# runs on one GPU (tune refuses workers of more than one process), so each run would take days; it needs
# multi-GPU tuning trials first. With data=image_folder data.path=<ImageNet> model=vit_s the commands are the same.
# Estimate: 6·N·D at 40% of 989 TFLOP/s per run; the batch study's runs see the same tokens (small batches run at a
# lower utilisation than assumed).
source "$(dirname "$0")/../paper_scale.sh" lion
estimate "lion main" 74 "$(lm_hours 124e6 1.31e9)"
estimate "lion batch" 126 "$(lm_hours 124e6 1.31e9)"
MATCHED="search_space.lr.low=1e-5 search_space.lr.high=1e-2 search_space.weight_decay.low=5e-3 search_space.weight_decay.high=10"
OWT="model=gpt2_small data=openwebtext train.micro_batch_size=32 train.log_every=50 train.precision=bf16 $MATCHED"
for opt in adamw lion; do
  study "$OWT optimizer=$opt train.batch_size=128 train.steps=10000 train.eval_every=500 train.checkpoint_every=1000 tune.budget=32 run.group=$GROUP/main" "$TINY_LM"
done
for b in 32 128 512; do
  steps=$(( 1280000 / b ))
  for opt in adamw lion; do
    study "$OWT optimizer=$opt train.batch_size=$b train.steps=$steps train.eval_every=$(( steps / 20 )) train.checkpoint_every=$(( steps / 10 )) task=openwebtext_b$b tune.budget=16 run.group=$GROUP/batch" "$TINY_LM"
  done
done
dry_runs
