#!/usr/bin/env bash
# The CUDA paths that CPU tests cannot reach, a few steps each, one line per check:
#   bash scripts/gpu_check.sh            (on a machine with a GPU, after `make install`)
# bf16 autocast, torch.compile (its time kept out of the budget), trainer=gpu / experiment=gpu end to end,
# the evaluation protocol on CUDA, and DDP on NCCL over every visible GPU (torchrun). Exit status = failures.
set -u
cd "$(dirname "$0")/.."
GENBENCH=${GENBENCH:-.venv/bin/genbench}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
SMALL_EVAL=(eval=smoke)
failures=0

check() {  # check NAME COMMAND...: PASS/FAIL NAME, the log's last line on failure
  local name=$1; shift
  if "$@" >"$WORK/$name.log" 2>&1; then echo "PASS $name"; else echo "FAIL $name: $(tail -n 1 "$WORK/$name.log")"; failures=$((failures + 1)); fi
}

state() {  # state RUN_DIR PYTHON_EXPR: evaluates EXPR on the run's last checkpoint `s`
  "$PYTHON" -c "from genbench.checkpoint import load_checkpoint; s = load_checkpoint('$1'); assert $2, $2"
}

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
echo "genbench gpu_check: $gpus GPU(s): $("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"), torch $("$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda)")"
[ "$gpus" -ge 1 ] || { echo "FAIL cuda: no GPU visible"; exit 1; }

check bf16 "$GENBENCH" train experiment=smoke trainer.device=cuda trainer.precision=bf16 trainer.max_steps=5 "${SMALL_EVAL[@]}" hydra.run.dir="$WORK/bf16"
check bf16-finite state "$WORK/bf16" "s['step'] == 5 and all(v.isfinite().all() for v in s['model'].values() if v.is_floating_point())"
check compile "$GENBENCH" train experiment=smoke trainer.device=cuda trainer.compile=true trainer.max_steps=5 '~eval' hydra.run.dir="$WORK/compile"
check compile-time-kept-apart state "$WORK/compile" "s['compute']['compile_s'] > 0 and s['train_time'] < s['compute']['compile_s']"
for model in diffusion gan vae; do
  check "trainer=gpu-$model" "$GENBENCH" train trainer=gpu model=$model trainer.max_steps=20 trainer.log_every=10 "${SMALL_EVAL[@]}" hydra.run.dir="$WORK/gpu-$model"
done
check experiment=gpu "$GENBENCH" train experiment=gpu trainer.max_steps=10 '~eval' hydra.run.dir="$WORK/experiment-gpu"
check eval-on-cuda "$GENBENCH" eval run_dir="$WORK/gpu-diffusion" eval.num_samples=500 eval.num_reference=1000 eval.metrics.kid_subset_size=250
if [ "$gpus" -ge 2 ]; then
  for model in diffusion gan vae; do
    check "ddp-nccl-$model" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$gpus" -m genbench train \
      experiment=smoke model=$model trainer.device=cuda trainer.batch_size=$((16 * gpus)) trainer.max_steps=6 '~eval' hydra.run.dir="$WORK/ddp-$model"
    check "ddp-nccl-$model-ranks" state "$WORK/ddp-$model" "s['world_size'] == $gpus and len(s['rng_ranks']) == $gpus"
  done
else
  echo "SKIP ddp-nccl: one GPU (NCCL needs a GPU per process)"
fi
echo "gpu_check: $failures failure(s); logs in $WORK"
exit "$failures"
