#!/usr/bin/env bash
# Lion study: optimizer-state memory, step time, the "lr 3-10× smaller, wd 3-10× larger than AdamW" rule
# (lr × wd grid), and the small-batch caveat. Run from the repository root: bash experiments/lion/run.sh
# Completed runs are reused. On a GPU cluster add cluster=slurm ... and change model=/data=.
set -euo pipefail
export OMP_NUM_THREADS=1
RO="python -m research_optim -m"
OUT=experiments/lion
COMMON="train.steps=500 train.eval_every=250 train.log_every=10 train.checkpoint_every=0 train.progress=false"

# memory and step time (no training)
python experiments/state_memory.py --optimizers adamw lion c_adamw c_lion --out $OUT/state_memory
python experiments/lion/step_time.py --out $OUT/step_time

# lr × wd grid on the digits MLP (batch 64), seeds 0,1,2; the same wd grid for both, lr grids one decade apart
$RO optimizer=adamw optimizer.lr=1e-3,3e-3,1e-2 optimizer.weight_decay=0.03,0.3,3.0 seed=0,1,2 $COMMON run.group=lion/lr_wd
$RO optimizer=lion optimizer.lr=1e-4,3e-4,1e-3 optimizer.weight_decay=0.03,0.3,3.0 seed=0,1,2 $COMMON run.group=lion/lr_wd

# batch size: at batch 8 and 256 re-tune lr (seed 0, wd = each one's best at batch 64 on val loss), then 3 seeds
for B in 8 256; do
  for opt in adamw lion; do
    wd=$(python experiments/tools.py best runs/lion/lr_wd $opt --param weight_decay --split val --last-k 1)
    [ $opt = adamw ] && grid=1e-3,3e-3,1e-2 || grid=1e-4,3e-4,1e-3
    $RO optimizer=$opt optimizer.lr=$grid optimizer.weight_decay=$wd train.batch_size=$B seed=0 $COMMON run.group=lion/batch_lr_b$B
    lr=$(python experiments/tools.py best runs/lion/batch_lr_b$B $opt --split val --last-k 1)
    $RO optimizer=$opt optimizer.lr=$lr optimizer.weight_decay=$wd train.batch_size=$B seed=0,1,2 $COMMON run.group=lion/batch_b$B
  done
done

# the grid's optima sat on its edges: one more lr (and for Lion one more wd) past them, in a separate group so
# that the batch-size section above keeps reading the original grid
$RO optimizer=adamw optimizer.lr=3e-2 optimizer.weight_decay=0.03,0.3,3.0 seed=0,1,2 $COMMON run.group=lion/lr_wd_edge
$RO optimizer=lion optimizer.lr=3e-3 optimizer.weight_decay=0.3,3.0,10.0 seed=0,1,2 $COMMON run.group=lion/lr_wd_edge
$RO optimizer=lion optimizer.lr=1e-3 optimizer.weight_decay=10.0 seed=0,1,2 $COMMON run.group=lion/lr_wd_edge

python experiments/lion/grid_table.py runs/lion/lr_wd runs/lion/lr_wd_edge --out $OUT/lr_wd
python experiments/lion/batch_table.py --out $OUT/batch
python -m research_optim.report runs/lion/lr_wd --out $OUT/report --last-k 5 --quiet
