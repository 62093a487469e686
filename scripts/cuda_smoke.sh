#!/usr/bin/env bash
# The CUDA paths in one run, for a machine with a GPU (CI has none, so nothing else runs them):
# training in bf16 autocast, fp16 with a GradScaler and float32; torch.compile; kill-free resume;
# DDP and FSDP under torchrun, one process per GPU (NCCL needs two GPUs or more: a world of one
# process opens no process group); the CUDA log-mel test; evaluation in float32, float16
# and bfloat16 (plus beam search and a torchrun-sharded one); sequential and batched long-form
# transcription of data/audio; training throughput at Whisper-base size.
#
#   scripts/cuda_smoke.sh DATA_DIR MODEL_DIR OUT_DIR
#
# DATA_DIR holds train.jsonl and dev.jsonl (a few dozen utterances are enough), MODEL_DIR a
# trained model directory (e.g. RUN/final). OUT_DIR receives cuda_smoke.log (every step's
# output), summary.txt (one line per step: name, exit status, seconds), evals.tgz (the three
# evaluations' utterances.jsonl, to compare with a CPU float32 evaluation) and bench_train.log.
# Steps are independent: one that fails is reported and the next one runs. STEPS="train_auto
# eval_float16 ..." runs only the steps named (a rerun within a short GPU lease); DEVICE=cpu
# tries the same command lines on the CPU first (the CUDA-only steps then fail, the others run).
set -u
DATA=$(realpath "$1") MODEL=$(realpath "$2") OUT=$(realpath "$3")
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if [[ $DEVICE == cpu ]]; then NPROC=2; else NPROC=$(nvidia-smi -L 2>/dev/null | wc -l); fi
(( NPROC >= 1 )) || NPROC=1
RUNS=$(mktemp -d)
TINY=recipes/synth_en/conf/tiny.yaml
TRAIN=(--set run.device=$DEVICE --set run.progress=false
       --set data.train="$DATA/train.jsonl" --set data.dev="$DATA/dev.jsonl")
mkdir -p "$OUT"
: > "$OUT/summary.txt"

step() {  # step NAME SECONDS COMMAND...: run it, log it, one summary line
    local name=$1 limit=$2 start rc
    shift 2
    [[ -z "${STEPS:-}" || " $STEPS " == *" $name "* ]] || return 0
    echo "=== $name: $*" | tee -a "$OUT/cuda_smoke.log"
    start=$(date +%s)
    timeout "$limit" "$@" > "$RUNS/$name.log" 2>&1
    rc=$?
    tail -n 25 "$RUNS/$name.log" >> "$OUT/cuda_smoke.log"
    echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$OUT/summary.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$OUT/cuda_smoke.log"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else '(no GPU)')" | tee -a "$OUT/cuda_smoke.log"

# Most telling first: a run cut short by a time limit still reports what it reached.
step log_mel_test 120 $PY -m pytest -q -p no:cacheprovider tests/test_audio.py -k cuda
step train_auto 150 $PY -m asr train $TINY --run-dir "$RUNS/auto" "${TRAIN[@]}"
step train_fp16 150 $PY -m asr train $TINY --run-dir "$RUNS/fp16" "${TRAIN[@]}" --set precision=float16
step torchrun_ddp 150 torchrun --standalone --nproc_per_node $NPROC -m asr train $TINY --run-dir "$RUNS/ddp" "${TRAIN[@]}"
step torchrun_fsdp 150 torchrun --standalone --nproc_per_node $NPROC -m asr train $TINY --run-dir "$RUNS/fsdp" \
    "${TRAIN[@]}" --set distributed.strategy=fsdp
for type in float32 float16 bfloat16; do
    step "eval_$type" 120 $PY -m asr evaluate --model "$MODEL" --data "$DATA/train.jsonl" "$DATA/dev.jsonl" \
        --device $DEVICE --compute-type "$type" --ctc-weight 0.3 --without-timestamps --normalizer basic --output-dir "$RUNS/eval_$type" --quiet
done
evals=$(cd "$RUNS" && ls -d eval_*/utterances.jsonl eval_*/summary.json 2>/dev/null)
[[ -n "$evals" ]] && tar czf "$OUT/evals.tgz" -C "$RUNS" $evals
step bench_train 150 $PY scripts/bench_train.py --device $DEVICE --state 512 --heads 8 --layers 6 \
    --batch 32 --seconds 30 --tokens 100 --rounds 5
[[ -f "$RUNS/bench_train.log" ]] && cp "$RUNS/bench_train.log" "$OUT/"
step train_half 150 $PY -m asr train $TINY --run-dir "$RUNS/resumed" "${TRAIN[@]}" --max-steps 20
step train_resume 150 $PY -m asr train --resume "$RUNS/resumed" --max-steps 40
step eval_beam 120 $PY -m asr evaluate --model "$MODEL" --data "$DATA/dev.jsonl" --device $DEVICE --beam-size 5 \
    --ctc-weight 0.3 --without-timestamps --normalizer basic --output-dir "$RUNS/eval_beam" --quiet
step transcribe_long 120 $PY -m asr transcribe data/audio --model "$MODEL" --device $DEVICE --verbose
step transcribe_batched 120 $PY -m asr transcribe data/audio --model "$MODEL" --device $DEVICE --batched --verbose
step eval_torchrun 120 torchrun --standalone --nproc_per_node $NPROC -m asr evaluate --model "$MODEL" \
    --data "$DATA/dev.jsonl" --device $DEVICE --normalizer basic --output-dir "$RUNS/eval_torchrun" --quiet
step train_fp32 150 $PY -m asr train $TINY --run-dir "$RUNS/fp32" "${TRAIN[@]}" --set precision=float32
# the slowest (Inductor compiles the residual blocks first), so last
step train_compile 190 $PY -m asr train $TINY --run-dir "$RUNS/compile" "${TRAIN[@]}" --set run.compile=true

# One line per training run: steps done, last loss, last dev WER, rotary base, precision chosen.
$PY - "$RUNS" <<'EOF' | tee -a "$OUT/cuda_smoke.log"
import json, sys
from pathlib import Path
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if (p / "metrics.jsonl").exists()):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    steps = [r for r in rows if "loss" in r]
    wers = [r["dev_wer"] for r in rows if "dev_wer" in r]
    print(f"{run.name:10s} steps {steps[-1]['step'] if steps else 0:3d}  first loss {steps[0]['loss'] if steps else float('nan'):.3f}"
          f"  last loss {steps[-1]['loss'] if steps else float('nan'):.3f}  dev WER {wers[-1] if wers else float('nan'):.3f}"
          f"  base {steps[-1].get('rotary_base', float('nan')) if steps else float('nan'):.0f}")
EOF
grep -h "precision\|autocast" "$RUNS"/*.log | sort | uniq -c | head -20 >> "$OUT/cuda_smoke.log"
cat "$OUT/summary.txt"
