#!/usr/bin/env bash
# Schedule-Free at paper scale (Defazio et al. 2024): CIFAR-10 (augmented; 45k train / 5k validation held out / 10k
# test), ResNet-18 and ViT-S (patch 4), batch 128; AdamW + cosine tuned per horizon of 50, 100 and 200 epochs (17600,
# 35200, 70400 steps) against one SF-AdamW run tuned at 200 epochs with its warmup searched; 16 trials per study,
# 5 fresh seeds, as in run.sh. CIFAR-10 comes from the Hugging Face hub (data.path=<local parquet> offline).
#   PARTITION=gpu bash experiments/schedule_free/paper_scale.sh
#   PAPER_DRY=1 bash experiments/schedule_free/paper_scale.sh   # the dry run (tests/test_studies.py)
# Estimate: per model 3 cosine studies and 1 SF study of 21 runs = 21 x (50 + 100 + 200) + 21 x 200 = 11550 epochs;
# assumed 10 s (ResNet-18) and 15 s (ViT-S) per CIFAR-10 epoch on one GPU, data loading included.
source "$(dirname "$0")/../paper_scale.sh" schedule_free
estimate "schedule_free resnet18" 84 "$(python -c 'print(11550 * 10 / 3600 / 84)')"
estimate "schedule_free vit_s" 84 "$(python -c 'print(11550 * 15 / 3600 / 84)')"
for model in resnet18 vit_s; do
  W="model=$model data=cifar10_aug train.batch_size=128 train.eval_every=1760 train.log_every=100 train.checkpoint_every=3520 train.precision=bf16 tune.budget=16 run.group=$GROUP/$model"
  for h in 17600 35200 70400; do
    study "$W optimizer=adamw train.steps=$h task=cifar10_${model}_h$h" "$TINY_IMAGE"
  done
  study "$W optimizer=sf_adamw train.steps=70400 task=cifar10_${model}_h70400 '+search_space.warmup={key: optimizer.warmup_steps, choices: [0,1760,3520,7040,14080]}'" "$TINY_IMAGE"
done
dry_runs
