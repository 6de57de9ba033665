#!/usr/bin/env bash
# Cautious at paper scale (Liang et al. 2024; the GaLore LLaMA setting): LLaMA-130M on C4 (T5 tokenizer, seq 256),
# batch 512, 20k steps (2.6B tokens), cosine with 10% warmup, bf16; AdamW, C-AdamW, Lion, C-Lion each tuned with 16
# Sobol trials and confirmed on 5 fresh seeds, as in run.sh. Needs the C4 shards first:
#   python -m research_optim.prepare data=c4 data.shards=/shared/shards/c4_en_t5
#   PARTITION=gpu RESEARCH_OPTIM_DATA=/shared bash experiments/cautious/paper_scale.sh
#   PAPER_DRY=1 bash experiments/cautious/paper_scale.sh      # the dry run (tests/test_studies.py)
source "$(dirname "$0")/../paper_scale.sh" cautious
FULL="model=llama_130m data=c4 train.steps=20000 train.batch_size=512 train.micro_batch_size=128 train.precision=bf16 schedule.warmup_steps=0.1 train.eval_every=1000 train.log_every=50 train.checkpoint_every=1000 tune.budget=16 run.group=$GROUP"
# 4 studies x (16 trials + 5 confirmation runs); 134M parameters x 2.62B tokens per run
estimate cautious 84 "$(lm_hours 134e6 2.62e9)"
for opt in adamw c_adamw lion c_lion; do
  study "$FULL optimizer=$opt" "$TINY_LM"
done
dry_runs
