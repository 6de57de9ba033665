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

# 1b. the protocol's edge rule, as the study ran it: on lm_stream AdamW's and C-AdamW's selected lr lay on the upper
# edge of [1e-4, 1e-2] and Lion's weight decay on the lower edge of [0.05, 10]; each pair's space is widened the same
# way (C-AdamW keeps AdamW's space, C-Lion Lion's) and all four lm_stream studies continue to 24 trials (the first 16
# count), so every optimizer keeps the same budget over a space of the same shape
B=$(budget 24)
widened=()
for opt in adamw c_adamw; do widened+=("$TUNE $LM optimizer=$opt tune.budget=$B search_space.lr.high=0.1 run.group=$G"); done
for opt in lion c_lion; do widened+=("$TUNE $LM optimizer=$opt tune.budget=$B search_space.weight_decay.low=0.005 run.group=$G"); done
pool "${widened[@]}"
# 1c, 1d. then Lion's selected lr lay on the upper edge of [1e-5, 1e-3], and after widening it C-Lion's weight decay
# on the lower edge of [0.005, 10]: the Lion pair widened twice more, to 32 then 40 trials (the AdamW pair, no longer
# on an edge, stays at 24: the claims compare within a pair; Lion against AdamW is the Lion study's question)
for widen in "32 0.005" "40 0.0005"; do
  read -r trials wd_low <<< "$widen"
  B=$(budget "$trials")
  widened=()
  for opt in lion c_lion; do
    widened+=("$TUNE $LM optimizer=$opt tune.budget=$B search_space.weight_decay.low=$wd_low search_space.lr.high=0.01 run.group=$G")
  done
  pool "${widened[@]}"
done

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
pool "$REPORT '$ROOT/$G' --split val --baseline adamw --out '$OUT/report_adamw'" \
  "$REPORT '$ROOT/$G' --split val --baseline lion --out '$OUT/report_lion'" \
  "$REPORT '$ROOT/$G' --split test --out '$OUT/report_test'" \
  "$REPORT '$ROOT/$GROUP/phi' --split val --baseline lib_adamw --method-keys optimizer.base optimizer.phi --out '$OUT/report_phi'"
