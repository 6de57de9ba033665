#!/usr/bin/env bash
# SaLSA at paper scale (Kenneweg et al. 2024): the run.sh protocol — Adam and SGD tuned (16 trials, 5 fresh seeds),
# Adam at its defaults, SaLSA and SGD-SaLSA at c = 0.3 (the paper's runs) and 0.5 (the default) untuned — on two of the
# paper's kinds of task the project can run: image classification, CIFAR-10 with ResNet-18 (the paper: ResNet-34;
# model.arch=resnet34 gives timm's) for 100 epochs at batch 128, and transformer language modelling, GPT-2 small on
# OpenWebText (1.3B tokens). Not here: the paper's GLUE fine-tuning of BERT-style encoders (the project has no
# encoder model config).
#   python -m research_optim.prepare data=openwebtext     # once, on the cluster
#   PARTITION=gpu bash experiments/salsa/paper_scale.sh
#   PAPER_DRY=1 bash experiments/salsa/paper_scale.sh      # the dry run (tests/test_studies.py)
# Estimate per task: 2 tuned studies x 21 runs + 25 untuned runs = 67 runs; SaLSA's extra forward passes (~1.4-2 per
# step) are not counted. CIFAR: assumed 10 s per epoch on one GPU; GPT-2 small: 6·N·D at 40% of 989 TFLOP/s.
source "$(dirname "$0")/../paper_scale.sh" salsa
estimate "salsa cifar10" 67 "$(python -c 'print(100 * 10 / 3600)')"
estimate "salsa openwebtext" 67 "$(lm_hours 124e6 1.31e9)"
SEEDS=100,101,102,103,104
CIFAR="model=resnet18 data=cifar10_aug train.batch_size=128 train.steps=35200 train.eval_every=1760 train.log_every=100 train.checkpoint_every=3520 train.precision=bf16"
OWT="model=gpt2_small data=openwebtext train.batch_size=128 train.micro_batch_size=32 train.steps=10000 train.eval_every=500 train.log_every=50 train.checkpoint_every=1000 train.precision=bf16"
for pair in "cifar10:$CIFAR:$TINY_IMAGE" "openwebtext:$OWT:$TINY_LM"; do
  IFS=: read -r name W TINY <<< "$pair"
  study "$W optimizer=adamw optimizer.weight_decay=0 ~search_space.weight_decay tune.budget=16 run.group=$GROUP/$name/tuned" "$TINY"
  study "$W optimizer=sgd optimizer.weight_decay=0 ~search_space.weight_decay tune.budget=16 run.group=$GROUP/$name/tuned" "$TINY"
  arms "$W optimizer=adamw optimizer.lr=1e-3 optimizer.weight_decay=0 schedule=constant seed=$SEEDS run.group=$GROUP/$name/defaults"
  arms "$W optimizer=salsa,salsa_sgd optimizer.c=0.3,0.5 seed=$SEEDS run.group=$GROUP/$name/defaults"
done
dry_runs
