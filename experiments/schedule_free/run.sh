#!/usr/bin/env bash
# Schedule-Free study v2 (PLAN in README.md): one SF-AdamW run per seed against the envelope of AdamW + cosine runs
# tuned separately for each horizon, on two optimisation workloads and one generalisation workload. Every study has
# the same budget (16 Sobol trials) over a space of the same shape — weight decay searched on both sides — and is
# confirmed on 5 fresh seeds; SF's own warmup is searched (0 to 20% of the longest horizon).
#   bash experiments/schedule_free/run.sh             # the study (~1 h on 2 cores; README.md#budget)
#   STUDY_TINY=1 RESEARCH_OPTIM_RUNS=/tmp/r bash experiments/schedule_free/run.sh   # smoke test
source "$(dirname "$0")/../study.sh" schedule_free
G=$GROUP/main
B=$(budget 16)

# per workload: name, its overrides, the horizons (each divides by eval_every, so SF is evaluated at every one)
if [ "$TINY" = 1 ]; then
  declare -A HORIZONS=([teacher_student]="10 20" [lm_stream]="10 20" [digits]="10 20")
else
  declare -A HORIZONS=([teacher_student]="750 1500 3000" [lm_stream]="250 500 1000" [digits]="250 500 1000")
fi
declare -A WORKLOAD=([teacher_student]="$TS" [lm_stream]="$LM train.eval_every=50" [digits]="$DIGITS train.eval_every=50")
[ "$TINY" = 1 ] && WORKLOAD[lm_stream]="$LM" && WORKLOAD[digits]="$DIGITS"

# run_studies BUDGET "WORKLOADS" "ADAMW_EXTRA" "SF_EXTRA": per workload, AdamW + cosine (5% warmup, decay to 0 at H)
# tuned for each horizon H (AlgoPerf's AdamW space), and one SF-AdamW study at the longest horizon with its warmup
# searched among 0, 2.5, 5, 10, 20% of it; *_EXTRA: overrides added to every study of that optimizer
run_studies() {
  local studies=() w h hs hmax warmups
  for w in $2; do
    hs=(${HORIZONS[$w]})
    hmax=${hs[-1]}
    for h in "${hs[@]}"; do
      studies+=("$TUNE ${WORKLOAD[$w]} optimizer=adamw train.steps=$h task=${w}_h$h tune.budget=$1 run.group=$G $3")
    done
    warmups=$(python -c "print(','.join(dict.fromkeys(str(round($hmax * f)) for f in (0, 0.025, 0.05, 0.1, 0.2))))")
    studies+=("$TUNE ${WORKLOAD[$w]} optimizer=sf_adamw train.steps=$hmax task=${w}_h$hmax tune.budget=$1 run.group=$G '+search_space.warmup={key: optimizer.warmup_steps, choices: [$warmups]}' $4")
  done
  pool "${studies[@]}"
}
run_studies "$B" "teacher_student lm_stream digits" "" ""

# the protocol's edge rule, as the study ran it: four selections lay on an edge (cosine on lm_stream at H = 1000:
# 1 − β1 on the upper edge; cosine on digits at H = 250 and 500: lr on the upper edge, weight decay on the lower; SF
# on digits: lr on the upper edge). Every study of those two workloads continues to 24 trials (the first 16 count) over
# its space widened the same way — lr ×10 upward, weight decay ×10 downward, 1 − β1 up to 1 (SF: 0.99, as its β1
# must stay above 0) — so that within a workload every study keeps the same budget over a space of the same shape
WIDE="search_space.weight_decay.low=0.0005"
run_studies "$(budget 24)" "lm_stream digits" "$WIDE search_space.lr.high=0.1 search_space.one_minus_beta1.high=1" \
  "$WIDE search_space.lr.high=0.25 search_space.one_minus_beta1.high=0.99"

# the claim: SF's single run at step H against the cosine run tuned for H, paired by seed, at every horizon; state
# memory; the full comparison at the longest horizons (validation; held-out test)
analyses=()
for w in teacher_student lm_stream digits; do
  analyses+=("python experiments/schedule_free/envelope.py '$ROOT/$G' --workload $w --horizons ${HORIZONS[$w]} --out '$OUT/envelope_$w'")
done
pool "${analyses[@]}" "python experiments/state_memory.py --optimizers adamw sf_adamw --out '$OUT/state_memory'" \
  "$REPORT '$ROOT/$G' --split val --out '$OUT/report_val'" "$REPORT '$ROOT/$G' --split test --out '$OUT/report_test'"
