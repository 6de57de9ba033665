#!/usr/bin/env bash
# SaLSA study v2 (PLAN in README.md): SaLSA at its defaults (no tuning; c = 0.3 as in the paper's runs and the package
# default 0.5) against Adam tuned by the protocol (16 Sobol trials, 24 where the edge rule widened the space; 5 fresh
# seeds) and against Adam at its defaults; SGD-SaLSA against SGD tuned the same way; forward passes as the cost axis.
# Two optimisation workloads, one generalisation workload. Adam = AdamW with weight decay 0 (no line search here uses
# weight decay either).
#   bash experiments/salsa/run.sh                     # the study (~1 h on 2 cores; README.md#budget)
#   STUDY_TINY=1 RESEARCH_OPTIM_RUNS=/tmp/r bash experiments/salsa/run.sh   # smoke test
source "$(dirname "$0")/../study.sh" salsa
B=$(budget 16)

declare -A WORKLOAD=([teacher_student]="$TS" [lm_stream]="$LM" [digits]="$DIGITS")
commands=()
for w in teacher_student lm_stream digits; do
  W="${WORKLOAD[$w]}"
  # tuned: Adam (lr, 1 − β1; cosine schedule) and SGD with Nesterov momentum (lr, 1 − momentum), weight decay 0
  commands+=("$TUNE $W optimizer=adamw optimizer.weight_decay=0 ~search_space.weight_decay tune.budget=$B run.group=$GROUP/$w/tuned")
  commands+=("$TUNE $W optimizer=sgd optimizer.weight_decay=0 ~search_space.weight_decay tune.budget=$B run.group=$GROUP/$w/tuned")
  # untuned, on the confirmation seeds: Adam at its defaults (torch.optim.Adam: lr 1e-3, constant), SaLSA and
  # SGD-SaLSA at c = 0.3 and 0.5 (everything else at the package defaults)
  commands+=("$RUN $W optimizer=adamw optimizer.lr=1e-3 optimizer.weight_decay=0 schedule=constant seed=$SEEDS run.group=$GROUP/$w/defaults")
  commands+=("$RUN $W optimizer=salsa,salsa_sgd optimizer.c=0.3,0.5 seed=$SEEDS run.group=$GROUP/$w/defaults")
done
pool "${commands[@]}"

# the protocol's edge rule, as the study ran it: tuned Adam's lr lay on the upper edge of [1e-4, 1e-2] on lm_stream and
# digits. Adam and SGD of those two workloads continue to 24 trials (the first 16 count), each lr range ×10 upward, so
# that within a workload both tuned baselines keep the same budget over a space widened the same way
commands=()
for w in lm_stream digits; do
  W="${WORKLOAD[$w]}"
  commands+=("$TUNE $W optimizer=adamw optimizer.weight_decay=0 ~search_space.weight_decay tune.budget=$(budget 24) run.group=$GROUP/$w/tuned search_space.lr.high=0.1")
  commands+=("$TUNE $W optimizer=sgd optimizer.weight_decay=0 ~search_space.weight_decay tune.budget=$(budget 24) run.group=$GROUP/$w/tuned search_space.lr.high=50")
done
pool "${commands[@]}"

# reports, per workload, on validation (on the optimisation workloads: the population loss), with steps and forward
# passes as cost axes: "tuned Adam" (SaLSA at its defaults against the tuned baselines named in the tuned group's
# selection file; and against tuned SGD), and "Adam at its defaults" (the untuned group alone); and where the line
# searches' step sizes settle against the tuned baselines' lr, and their forward passes per step
KEYS="--method-keys optimizer.base optimizer.c --split val"
reports=()
for w in teacher_student lm_stream digits; do
  reports+=("$REPORT '$ROOT/$GROUP/$w' --selection '$ROOT/$GROUP/$w/tuned/selection.json' $KEYS --out '$OUT/report_${w}_tuned'")
  reports+=("$REPORT '$ROOT/$GROUP/$w' --selection '$ROOT/$GROUP/$w/tuned/selection.json' $KEYS --baseline sgd --out '$OUT/report_${w}_tuned_sgd'")
  reports+=("$REPORT '$ROOT/$GROUP/$w/defaults' $KEYS --out '$OUT/report_${w}_defaults'")
done
pool "${reports[@]}" "python experiments/salsa/step_sizes.py '$ROOT/$GROUP' --out '$OUT/step_sizes'"
