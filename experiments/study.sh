# Sourced by each study's run.sh: the protocol every study shares (experiments/README.md#protocol).
#   STUDY_TINY=1       a smoke test of the whole script: tiny models and steps, 1 trial, 2 confirmation seeds,
#                      outputs under $RESEARCH_OPTIM_RUNS/<study>/out instead of experiments/<study>/ (seconds per run)
#   STUDY_JOBS=2       tune commands run at once (one CPU core each)
#   STUDY_REUSE=any    also reuse completed runs of other code versions (default: the current code's only; the
#                      reports list every run's code version either way)
set -euo pipefail
export OMP_NUM_THREADS=1  # tiny models on shared cores: one thread per process avoids oversubscription
STUDY=$1
ROOT=${RESEARCH_OPTIM_RUNS:-runs}
TINY=${STUDY_TINY:-0}
JOBS=${STUDY_JOBS:-2}
GROUP=studies/$STUDY  # run.group prefix: runs land in $ROOT/studies/<study>/...

if [ "$TINY" = 1 ]; then
  OUT=$ROOT/$STUDY/out
  CONFIRM="[100,101]"
else
  OUT=experiments/$STUDY
  CONFIRM="[100,101,102,103,104]"
  # the reports record the code version: a study runs on committed code, so that a commit reproduces it
  if [ -n "$(git status --porcelain --untracked-files=no)" ] && [ "${STUDY_ALLOW_DIRTY:-0}" != 1 ]; then
    echo "error: uncommitted changes to tracked files; the study's runs and reports would record code no commit" \
         "holds. Commit first (or STUDY_ALLOW_DIRTY=1 for a trial that is not the study)." >&2
    exit 2
  fi
fi
mkdir -p "$OUT"

# the tune command every study uses: the same tuning seed, confirmation seeds and reuse policy for every optimizer
TUNE="python -m research_optim.tune train.progress=false 'tune.confirm_seeds=$CONFIRM' run.reuse=${STUDY_REUSE:-same_code}"
RUN="python -m research_optim -m train.progress=false run.reuse=${STUDY_REUSE:-same_code}"
REPORT="python -m research_optim.report --quiet"

# budget N: the trials of a study (1 in tiny mode)
budget() { if [ "$TINY" = 1 ]; then echo 1; else echo "$1"; fi; }
# seeds: the confirmation seeds as a Hydra sweep (for runs that are not tuned)
SEEDS=$(echo "$CONFIRM" | tr -d '[]')

# The workloads (docs/tuning.md#workloads), each with its tiny stand-in: TS and LM measure optimisation (fresh
# samples every step; the training loss estimates the population loss); DIGITS generalisation (a fixed training set).
if [ "$TINY" = 1 ]; then
  TS="experiment=teacher_student data.optimum_samples=4096 data.num_val=256 data.num_test=256 model.hidden=32 train.batch_size=16 train.steps=20 train.eval_every=10 train.log_every=10 train.checkpoint_every=0"
  LM="experiment=lm_stream model.n_layer=1 model.n_embd=16 model.n_head=2 data.num_val=64 data.num_test=64 train.batch_size=8 train.steps=20 train.eval_every=10 train.log_every=10 train.checkpoint_every=0"
  DIGITS="task=digits model.hidden=32 train.steps=20 train.eval_every=10 train.log_every=10 train.checkpoint_every=0"
else
  TS="experiment=teacher_student"
  LM="experiment=lm_stream"
  DIGITS="task=digits train.steps=1000 train.eval_every=100 train.log_every=20 train.checkpoint_every=0"
fi

# pool CMD...: run the command lines JOBS at a time; fails (after all finished) if any failed. Tiny mode runs them in
# JOBS long-lived Python processes (in_process.py): its runs take a second, a fresh Python's imports several
if [ "$TINY" = 1 ]; then
  pool() { printf '%s\0' "$@" | python "$(dirname "${BASH_SOURCE[0]}")/in_process.py" --jobs "$JOBS"; }
else
  pool() { printf '%s\0' "$@" | xargs -0 -n1 -P "$JOBS" bash -c; }
fi
