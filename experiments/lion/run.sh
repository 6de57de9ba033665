#!/usr/bin/env bash
# Lion study v2 (PLAN in README.md): Lion against AdamW with both tuned by the protocol over the same (matched) space
# — 32 Sobol trials over lr, 1 − β1 and weight decay, confirmed on 5 fresh seeds — on two optimisation workloads and
# one generalisation workload; where each optimum lies (the lr/wd rule); the batch-size study at equal examples seen;
# state memory and step time as implementation facts.
#   bash experiments/lion/run.sh                      # the study (~1 h on 2 cores; README.md#budget)
#   STUDY_TINY=1 RESEARCH_OPTIM_RUNS=/tmp/r bash experiments/lion/run.sh   # smoke test
source "$(dirname "$0")/../study.sh" lion
# one space for both: the union of AdamW's and Lion's own spaces (conf/search_space/adamw.yaml, lion.yaml)
MATCHED="search_space.lr.low=1e-5 search_space.lr.high=1e-2 search_space.weight_decay.low=5e-3 search_space.weight_decay.high=10"

# 1. Lion vs AdamW on every workload
B=$(budget 32)
studies=()
for W in "$TS" "$LM" "$DIGITS"; do
  for opt in adamw lion; do
    studies+=("$TUNE $W optimizer=$opt $MATCHED tune.budget=$B run.group=$GROUP/main")
  done
done
pool "${studies[@]}"

# the protocol's edge rule, as the study ran it: on lm_stream both optimizers' lr lay on the upper edge of [1e-5, 1e-2];
# both continue to 48 trials (the first 32 count) over the same matched space with lr ×10 upward
studies=()
for opt in adamw lion; do
  studies+=("$TUNE $LM optimizer=$opt $MATCHED search_space.lr.high=0.1 tune.budget=$(budget 48) run.group=$GROUP/main")
done
pool "${studies[@]}"

# 2. batch size at equal examples seen (96k on the teacher-student task): steps = examples / batch, each batch size
# tuned on its own (16 trials per optimizer), so the comparison at every batch size is between tuned optimizers
B=$(budget 16)
if [ "$TINY" = 1 ]; then EXAMPLES=320; BATCHES="8 32"; else EXAMPLES=96000; BATCHES="32 128 512"; fi
studies=()
for b in $BATCHES; do
  steps=$(( (EXAMPLES + b / 2) / b ))
  for opt in adamw lion; do
    studies+=("$TUNE $TS optimizer=$opt $MATCHED train.batch_size=$b train.steps=$steps train.eval_every=$(( steps / 4 )) task=teacher_student_b$b tune.budget=$B run.group=$GROUP/batch")
  done
done
pool "${studies[@]}"
# the edge rule, as the study ran it: AdamW's 1 − β1 at batch 32 on the lower edge of [0.02, 0.5]; both optimizers at
# batch 32 continue to 24 trials (the first 16 count) over the same space with 1 − β1 ×10 downward
b=$(echo $BATCHES | cut -d' ' -f1)
steps=$(( (EXAMPLES + b / 2) / b ))
studies=()
for opt in adamw lion; do
  studies+=("$TUNE $TS optimizer=$opt $MATCHED train.batch_size=$b train.steps=$steps train.eval_every=$(( steps / 4 )) task=teacher_student_b$b search_space.one_minus_beta1.low=0.002 tune.budget=$(budget 24) run.group=$GROUP/batch")
done
pool "${studies[@]}"

# 3. implementation facts: step time (ratios measured side by side, medians; nothing else of the study runs meanwhile)
# and optimizer state bytes (exact); where the optima lie, and the reports (validation; held-out test; the batch study)
python experiments/lion/step_time.py --repeats $([ "$TINY" = 1 ] && echo 5 || echo 200) --out "$OUT/step_time"
pool "python experiments/state_memory.py --optimizers adamw lion --out '$OUT/state_memory'" \
  "python experiments/lion/ratios.py '$ROOT/$GROUP/main' '$ROOT/$GROUP/batch' --out '$OUT/ratios'" \
  "$REPORT '$ROOT/$GROUP/main' --split val --out '$OUT/report_val'" \
  "$REPORT '$ROOT/$GROUP/main' --split test --out '$OUT/report_test'" \
  "$REPORT '$ROOT/$GROUP/batch' --split val --out '$OUT/report_batch'"
