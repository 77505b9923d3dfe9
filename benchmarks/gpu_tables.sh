#!/usr/bin/env bash
# Issue 14's GPU figures in one go (README "Efficiency"): the suite at ViT-B/16 with 8 x 3 views per video
# (paper Table 9) and training at batch 8 (Table 10); training-cost variants; merged/plain latency at batch 1
# for zeroi2v-tiny, ViT-B/16 and ViT-L/14 in bf16, eager and under torch.compile.
#   bash benchmarks/gpu_tables.sh OUTDIR        (PY=python3 by default)
set -u
OUT=${1:-runs/gpu_tables}; mkdir -p "$OUT"
PY=${PY:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
log="$OUT/zero_cost.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout 120 $PY -m zeroi2v bench --suite --device cuda --backbone ViT-B-16 --batch 3 --views 3 --train-batch 8 \
  --max-batch 256 --throughput-seconds 20 --repeats 50 --out "$OUT/suite_b16" >"$OUT/suite.log" 2>&1 \
  && cat "$OUT/suite_b16/bench.md" || tail -5 "$OUT/suite.log"
timeout 240 $PY benchmarks/train_cost.py --device cuda --backbone ViT-B-16 --frames 8 --batch 8 --steps 3 \
  --variants full_bf16,zeroi2v_bf16,zeroi2v_fused_bf16,full,zeroi2v,zeroi2v_fused,zeroi2v_ckpt \
  --json "$OUT/train_cost.json" 2>&1 | grep -v "^  " | tee "$OUT/train_cost.md"
for mode in eager default reduce-overhead; do
  for bb in zeroi2v-tiny ViT-B-16 ViT-L-14; do
    [ "$mode" != eager ] && [ "$bb" = ViT-L-14 ] && continue
    extra=""; [ "$mode" != eager ] && extra="--compile $mode"
    timeout 150 $PY -m zeroi2v bench --device cuda --backbone "$bb" --repeats 100 $extra >"$OUT/zc.log" 2>&1
    echo "$mode $bb: $(grep -E '^(plain ViT|ZeroI2V merged|verdict)' "$OUT/zc.log" | tr -s ' ' | tr '\n' ';')" | tee -a "$log"
  done
done
