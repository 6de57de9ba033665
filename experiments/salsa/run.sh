#!/usr/bin/env bash
# SaLSA study: SaLSA (defaults, no lr tuning) vs Adam and SGD (lr tuned per task), classic SLS and Adam-SLS
# (defaults) on 3 tasks; the paper's table layout; compute overhead; line-search ablation.
# Run from the repository root: bash experiments/salsa/run.sh   (completed runs are reused)
# On a GPU cluster add cluster=slurm ... and swap the task lines for the paper's models (model=... data=...).
set -euo pipefail
export OMP_NUM_THREADS=1
RO="python -m research_optim -m"
PICK="python experiments/tools.py best"
OUT=experiments/salsa
COMMON="train.eval_every=250 train.log_every=10 train.checkpoint_every=0 train.progress=false"
# Adam = AdamW with weight decay 0 (SaLSA, SLS and Adam-SLS run without weight decay too); SGD likewise.
declare -A TASK=(
  [digits_mlp]="task=digits_mlp model=mlp data=digits train.steps=500"
  [digits_mlp_bn]="task=digits_mlp_bn model=mlp model.depth=4 model.hidden=128 model.batch_norm=true data=digits train.steps=500"
  [markov_gpt]="task=markov_gpt experiment=lm_synthetic data.order=1 model.n_layer=1 model.n_embd=32 train.batch_size=16 train.steps=300 train.eval_every=100"
)
for t in digits_mlp digits_mlp_bn markov_gpt; do
  # stage 1: lr grids for the two tuned baselines, seed 0
  $RO ${TASK[$t]} $COMMON optimizer=adamw optimizer.weight_decay=0 optimizer.lr=1e-3,3e-3,1e-2 seed=0 run.group=salsa/lr_$t
  $RO ${TASK[$t]} $COMMON optimizer=sgd optimizer.weight_decay=0 optimizer.lr=0.03,0.1,0.3 seed=0 run.group=salsa/lr_$t
  # stage 2: tuned baselines and the untuned line searches, seeds 0,1,2
  for opt in adamw sgd; do
    lr=$($PICK runs/salsa/lr_$t $opt)
    $RO ${TASK[$t]} $COMMON optimizer=$opt optimizer.weight_decay=0 optimizer.lr=$lr seed=0,1,2 run.group=salsa/table/$t
  done
  $RO ${TASK[$t]} $COMMON optimizer=salsa,sls,adam_sls seed=0,1,2 run.group=salsa/table/$t
done

# line-search ablation on the digits MLP: one knob at a time around SaLSA's defaults, seeds 0,1,2
$RO sweep=line_search_ablation ${TASK[digits_mlp]} $COMMON seed=0,1,2 run.group=salsa/ablation \
  line_search.variant=default,c_low,c_high,growth_fast,backtrack_hard,no_smoothing,no_speed_up

# tables: the paper's layout (final training loss = mean of the last 5 logged 10-step windows), spread, ablation
python experiments/tools.py finals runs/salsa/table --out $OUT/table
python experiments/tools.py sweep runs/salsa/lr_digits_mlp runs/salsa/lr_digits_mlp_bn runs/salsa/lr_markov_gpt --out $OUT/lr_grids
python experiments/tools.py sweep runs/salsa/ablation --param line_search.variant --out $OUT/ablation
python experiments/salsa/overhead.py runs/salsa/table --out $OUT/overhead_from_runs
# wall-clock overhead measured side by side (3 interleaved repeats, medians), the benchmark script of benchmarks/
python -m benchmarks.salsa_overhead --repeats 3 --overrides train.steps=500 train.progress=false | tee $OUT/overhead_benchmark.txt
python -m research_optim.report runs/salsa/table --out $OUT/report --last-k 5 --quiet
