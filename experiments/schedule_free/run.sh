#!/usr/bin/env bash
# Schedule-Free study: SF-AdamW (one run, evaluated at every horizon) vs AdamW + cosine tuned separately for each
# horizon; β sensitivity; optimizer-state memory. Run from the repository root: bash experiments/schedule_free/run.sh
# Completed runs are reused (config-hash directories). On a GPU cluster add cluster=slurm ... and change model=/data=.
set -euo pipefail
export OMP_NUM_THREADS=1
RO="python -m research_optim -m"
PICK="python experiments/tools.py best --split val --last-k 1"   # tuned on what is compared: val loss at the end
OUT=experiments/schedule_free
BASE="train.eval_every=250 train.log_every=10 train.checkpoint_every=0 train.progress=false"

# AdamW + cosine (5% warmup, decay to 0 at the horizon), lr tuned per horizon with seed 0, then seeds 0,1,2
for H in 250 500 1000; do
  $RO optimizer=adamw optimizer.lr=1e-3,3e-3,1e-2 seed=0 train.steps=$H $BASE run.group=schedule_free/cosine_lr_h$H
  lr=$($PICK runs/schedule_free/cosine_lr_h$H adamw)
  $RO optimizer=adamw optimizer.lr=$lr seed=0,1,2 train.steps=$H $BASE run.group=schedule_free/cosine_h$H
done

# SF-AdamW: one 1000-step run per seed, evaluated (at x) every 250 steps; lr tuned once at the longest horizon;
# its own warmup of 50 steps (= the cosine runs' 5% at 1000 steps), constant schedule
SF="optimizer=sf_adamw optimizer.warmup_steps=50 train.steps=1000 $BASE"
$RO $SF optimizer.lr=1e-3,2.5e-3,1e-2 seed=0 run.group=schedule_free/sf_lr
lr=$($PICK runs/schedule_free/sf_lr sf_adamw)
# seeds 0,1,2 at that lr, for β (the x–y interpolation, betas[0]) = 0.9 (the default: the runs compared with
# cosine) and 0.95, 0.98 (sensitivity)
$RO $SF optimizer.lr=$lr optimizer.betas.0=0.9,0.95,0.98 seed=0,1,2 run.group=schedule_free/sf_beta

python $OUT/horizons.py --out $OUT/horizons
for H in 250 500 1000; do
  python experiments/tools.py sweep runs/schedule_free/cosine_lr_h$H --param lr --split val --last-k 1 --out $OUT/lr_grid_cosine_h$H
done
python experiments/tools.py sweep runs/schedule_free/sf_lr --param lr --split val --last-k 1 --out $OUT/lr_grid_sf
python experiments/tools.py sweep runs/schedule_free/sf_beta --param betas --split val --last-k 1 --out $OUT/beta
python experiments/state_memory.py --optimizers adamw sf_adamw --out $OUT/state_memory
python -m research_optim.report runs/schedule_free/sf_beta --out $OUT/report --last-k 5 --quiet
