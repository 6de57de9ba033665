#!/usr/bin/env bash
# Cautious study: C-AdamW vs AdamW and C-Lion vs Lion, lr tuned per optimizer, then 3 seeds at the tuned lr; φ ablation.
# Run from the repository root: bash experiments/cautious/run.sh
# Runs already completed are not trained again (run directories are keyed by the config hash), so the script
# can be re-run after an interruption. On a GPU cluster: add cluster=slurm cluster.partition=... and change
# model=/data= (or experiment=) in DIGITS / LM; nothing else changes.
set -euo pipefail
export OMP_NUM_THREADS=1   # tiny models on 2 shared cores: one thread per process avoids oversubscription
RO="python -m research_optim -m"
PICK="python experiments/tools.py best"
OUT=experiments/cautious

# --- Task 1: MLP on 8×8 handwritten digits (image), 1000 steps, batch 64, cosine schedule ---
DIGITS="train.steps=1000 train.eval_every=250 train.log_every=10 train.checkpoint_every=0 train.progress=false"
# stage 1: lr sweep, seed 0 (half-decade grid; one point added past the edge where the optimum sat on it)
$RO optimizer=adamw,c_adamw optimizer.lr=3e-4,1e-3,3e-3,1e-2,3e-2 seed=0 $DIGITS run.group=cautious/digits_lr
$RO optimizer=lion,c_lion optimizer.lr=3e-5,1e-4,3e-4,1e-3,3e-3 seed=0 $DIGITS run.group=cautious/digits_lr
# stage 2: each optimizer at its own best lr (lowest final train loss in stage 1), seeds 0,1,2
for opt in adamw c_adamw lion c_lion; do
  lr=$($PICK runs/cautious/digits_lr $opt)
  $RO optimizer=$opt optimizer.lr=$lr seed=0,1,2 $DIGITS run.group=cautious/digits_tuned
done

# --- φ ablation: every φ over the AdamW and Lion bases at the base's tuned lr, 500 steps, seeds 0,1,2 ---
PHI="train.steps=500 train.eval_every=250 train.log_every=10 train.checkpoint_every=0 train.progress=false"
for opt in adamw lion; do
  lr=$($PICK runs/cautious/digits_lr $opt)
  base=${opt/adamw/lib_adamw}   # make_cautious's base: the library's AdamW (torch's takes no mask)
  $RO sweep=phi_ablation optimizer.base=$base optimizer.lr=$lr seed=0,1,2 $PHI run.group=cautious/phi
  $RO optimizer=$opt optimizer.lr=$lr seed=0,1,2 $PHI run.group=cautious/phi     # the uncautious reference
done

python experiments/tools.py sweep runs/cautious/digits_lr --param lr --out $OUT/lr_sweep_digits
python experiments/tools.py speedup runs/cautious/digits_tuned --pairs c_adamw:adamw c_lion:lion --out $OUT/speedup_digits
python experiments/tools.py speedup runs/cautious/digits_tuned --split val --last-k 1 --pairs c_adamw:adamw c_lion:lion --out $OUT/speedup_digits_val
python experiments/tools.py settings runs/cautious/phi --out $OUT/phi_ablation
python -m research_optim.report runs/cautious/digits_tuned --out $OUT/report --last-k 5 --quiet

# --- Task 2: tiny GPT on the synthetic Markov language, order 1 (bigram; 32 tokens), 300 steps, batch 16 ---
LM="experiment=lm_synthetic data.order=1 model.n_layer=1 model.n_embd=32 train.batch_size=16 train.steps=300 train.eval_every=100 train.log_every=10 train.checkpoint_every=0 train.progress=false"
$RO optimizer=adamw,c_adamw optimizer.lr=3e-3,1e-2,3e-2 seed=0 $LM run.group=cautious/lm_lr
$RO optimizer=lion,c_lion optimizer.lr=3e-4,1e-3,3e-3 seed=0 $LM run.group=cautious/lm_lr
for opt in adamw c_adamw lion c_lion; do
  lr=$($PICK runs/cautious/lm_lr $opt)
  $RO optimizer=$opt optimizer.lr=$lr seed=0,1,2 $LM run.group=cautious/lm_tuned
done
python experiments/tools.py sweep runs/cautious/lm_lr --param lr --out $OUT/lr_sweep_lm
python experiments/tools.py speedup runs/cautious/lm_tuned --pairs c_adamw:adamw c_lion:lion --out $OUT/speedup_lm
python -m research_optim.report runs/cautious/lm_tuned --out $OUT/report_lm --last-k 5 --quiet
