#!/usr/bin/env bash
# Cautious study v2 (PLAN.md): C-AdamW vs AdamW and C-Lion vs Lion, each tuned by the protocol (16 Sobol trials,
# confirmed on 5 fresh seeds), on two optimisation workloads; the φ ablation with lr tuned per φ.
#   bash experiments/cautious/run.sh                  # the study (~1 h on 2 cores; PLAN.md#budget)
#   STUDY_TINY=1 RESEARCH_OPTIM_RUNS=/tmp/r bash experiments/cautious/run.sh   # smoke test, under a minute
source "$(dirname "$0")/../study.sh" cautious
G=$GROUP/main

# 1. C-AdamW / AdamW and C-Lion / Lion: 4 optimizers x 2 workloads, one study each; each cautious variant searches
# its base's space (conf/search_space/c_adamw.yaml = adamw.yaml, c_lion.yaml = lion.yaml)
B=$(budget 16)
studies=()
for W in "$LM" "$TS"; do
  for opt in adamw c_adamw lion c_lion; do
    studies+=("$TUNE $W optimizer=$opt tune.budget=$B run.group=$G")
  done
done
pool "${studies[@]}"

# 2. the φ ablation on the teacher-student task: every mask over the library's AdamW, lr tuned per φ (8 trials of
# lr alone; weight decay and betas at the base's defaults), and the uncautious base tuned the same way
B=$(budget 8)
PHI="$TS ~search_space.weight_decay run.group=$GROUP/phi tune.budget=$B"
phis=("$TUNE $PHI optimizer=lib_adamw ~search_space.one_minus_beta1")
for phi in indicator_mean indicator_ratio indicator soft signxor; do
  phis+=("$TUNE $PHI optimizer=cautious optimizer.phi=$phi ~search_space.phi 'tune.method_keys=[optimizer.base,optimizer.phi]'")
done
pool "${phis[@]}"

# reports: validation (the compared metric: steps to the tuned baseline's final validation loss, excess over the
# optimum), C-AdamW against AdamW and C-Lion against Lion; the held-out test split; the φ ablation
$REPORT "$ROOT/$G" --split val --baseline adamw --out "$OUT/report_adamw"
$REPORT "$ROOT/$G" --split val --baseline lion --out "$OUT/report_lion"
$REPORT "$ROOT/$G" --split test --out "$OUT/report_test"
$REPORT "$ROOT/$GROUP/phi" --split val --baseline lib_adamw --method-keys optimizer.base optimizer.phi --out "$OUT/report_phi"
