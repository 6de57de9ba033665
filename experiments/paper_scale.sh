# Sourced by each study's paper_scale.sh: the study's protocol (the same tune commands as its run.sh) at the paper's
# scale, on a GPU SLURM cluster; tune worker jobs of one GPU each pull the trials (docs/tuning.md#workers-faults-and-slurm).
#   PARTITION=gpu [WORKERS=8] bash experiments/<study>/paper_scale.sh    submit every study's worker jobs
#   PAPER_DRY=1 bash experiments/<study>/paper_scale.sh                  here, no GPU: check every paper-scale study
#       (tune.dry_run: composed, validated, every corner of its space built; nothing run), and run a tiny version of
#       the first — the same command with the tiny workload on top — as a SLURM job on the local debug partition
# The compute estimate (printed first) is GPU-hours on H100-class GPUs from the stated throughput assumptions.
set -euo pipefail
export OMP_NUM_THREADS=1
STUDY=$1
DRY=${PAPER_DRY:-0}
GROUP=studies_paper/$STUDY
TUNE="python -m research_optim.tune train.progress=false run.reuse=same_code"
if [ "$DRY" = 1 ]; then
  PAPER="cluster=slurm cluster.partition=gpu cluster.gpus_per_node=1 train.device=cuda tune.workers=${WORKERS:-8}"
  TINY_CLUSTER="cluster=slurm cluster.partition=debug train.device=cpu tune.workers=1 cluster.wait=true tune.budget=1 'tune.confirm_seeds=[100]'"
else
  : "${PARTITION:?set PARTITION to the GPU partition (sinfo -s lists them)}"
  PAPER="cluster=slurm cluster.partition=$PARTITION cluster.gpus_per_node=1 cluster.cpus_per_task=8 cluster.mem_gb=64 cluster.timeout_min=240 train.device=cuda tune.workers=${WORKERS:-8}"
fi
# the tiny stand-ins of the paper workloads (what a dry run submits)
TINY_LM="model=gpt model.n_layer=1 model.n_embd=16 model.n_head=2 data=synthetic_lm_stream data.num_val=64 data.num_test=64 train.steps=20 train.batch_size=8 train.micro_batch_size=null train.precision=fp32 train.eval_every=10 train.log_every=10 train.checkpoint_every=0"
TINY_IMAGE="model=mlp model.hidden=16 data=digits train.steps=20 train.batch_size=16 train.micro_batch_size=null train.precision=fp32 train.eval_every=10 train.log_every=10 train.checkpoint_every=0"

# study FULL TINY: one tune study with the overrides FULL (paper scale; FULL's run.group under $GROUP); a dry run
# checks FULL here, and the first study also runs with TINY on top on the local cluster (TINY's keys win), both when
# the script ends (dry_runs)
DRY_RUNS=()
study() {
  if [ "$DRY" = 1 ]; then
    if [ ${#DRY_RUNS[@]} = 0 ]; then DRY_RUNS+=("$TUNE $1 $2 $TINY_CLUSTER"); fi
    DRY_RUNS+=("$TUNE $1 $PAPER tune.dry_run=true")
  else
    eval "$TUNE $1 $PAPER"
  fi
}

# dry_runs: the last line of every paper_scale.sh — with PAPER_DRY=1, what study() collected, two at a time in two
# long-lived Python processes (in_process.py: a check takes a second, a fresh Python's imports several; the checks
# run while the tiny study waits for its SLURM job); fails if any failed
dry_runs() {
  if [ "$DRY" = 1 ]; then
    printf '%s\0' "${DRY_RUNS[@]}" | python "$(dirname "${BASH_SOURCE[0]}")/in_process.py" --jobs 2
  fi
}

# arms FULL: untuned runs (python -m research_optim -m: a sweep) at paper scale; a dry run composes one point of the
# sweep only (--cfg job: plain runs have no dry run of their own)
arms() {
  if [ "$DRY" = 1 ]; then
    local first; first=$(sed -E 's/=([^ ,]+),[^ ]+/=\1/g' <<< "$1")  # each swept key at its first value
    eval "python -m research_optim $first ${PAPER/ tune.workers=*/} --cfg job" > /dev/null && echo "composed  $first"
  else
    eval "python -m research_optim -m train.progress=false run.reuse=same_code $1 ${PAPER/ tune.workers=*/}"
  fi
}

# estimate NAME RUNS HOURS_PER_RUN: print runs x hours per run = GPU-hours; returns nothing
estimate() { python -c "print(f'estimate {\"$1\"}: $2 runs x {$3:.3g} GPU-h = {$2 * $3:.0f} GPU-h')"; }
# lm_hours PARAMS TOKENS: hours per run of a language model, 6·N·D FLOPs at 40% of an H100's 989 TFLOP/s (bf16 dense)
lm_hours() { python -c "print(6 * $1 * $2 / (0.4 * 989e12) / 3600)"; }
