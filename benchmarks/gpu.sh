#!/usr/bin/env bash
# The GPU benchmark run, in one go (about 5-8 minutes on one H100/H200); installs nothing.
#
#   bash benchmarks/gpu.sh            # from the repository root, in the project's environment
#   BATCH=16 bash benchmarks/gpu.sh   # a smaller train batch if memory is short
#
# 1. Train step at the 124M GPT-2 shape (12 x 768, 12 heads, vocab 50257), context 1024, bf16,
#    superalign vs transformers + PyTorch (SDPA attention, torch.compile, bf16 autocast, fused
#    AdamW), alternating blocks; MFU against the card's nominal dense bf16 peak.
# 2. Greedy KV-cached generation at the gpt2 shape (random checkpoint saved by transformers),
#    superalign.models.generate vs GPT2LMHeadModel.generate on CUDA, tokens checked equal.
# Both refuse to run (exit 2, one line) if JAX or torch sees no GPU. Figures, then targets.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
BATCH=${BATCH:-32}
SEQ=${SEQ:-1024}
export PYTHONUNBUFFERED=1
# JAX and torch share the card in one process: JAX allocates as it goes rather than 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}

python - <<'EOF' || exit 2
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
      "cuda" if torch.cuda.is_available() else "NO CUDA")
EOF
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true

echo "== train step: gpt2 shape, batch $BATCH x $SEQ, bfloat16"
timeout 330 python benchmarks/train_step.py --require-gpu --model gpt2 --dtype bfloat16 \
    --batch "$BATCH" --seq "$SEQ" --steps 30 --rounds 3 --warmup 3 | tee "$OUT/train.txt"
train_rc=${PIPESTATUS[0]}

echo "== generation: gpt2 shape, batch 32 x prompt 128 -> 128 new tokens, bfloat16 and float32"
timeout 120 python benchmarks/generate.py --require-gpu --shape gpt2 --dtype bfloat16 \
    --batch 32 --prompt-len 128 --new-tokens 128 --rounds 3 --per-round 2 | tee "$OUT/gen_bf16.txt"
gen_rc=${PIPESTATUS[0]}
timeout 120 python benchmarks/generate.py --require-gpu --shape gpt2 --dtype float32 \
    --batch 32 --prompt-len 128 --new-tokens 128 --rounds 3 --per-round 2 | tee "$OUT/gen_f32.txt"
gen32_rc=${PIPESTATUS[0]}

python - "$OUT" "$train_rc" "$gen_rc" "$gen32_rc" <<'EOF'
import json, os, sys
out, rcs = sys.argv[1], sys.argv[2:]
def last_json(name):
  try:
    lines = [l for l in open(os.path.join(out, name)) if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None
  except OSError:
    return None
def show(label, value, target, fmt):
  if value is None:
    print(f"{label:44s} n/a        (target {fmt(target)})  MISSING")
  else:
    print(f"{label:44s} {fmt(value):10s} (target {fmt(target)})  "
          f"{'MET' if value >= target else 'NOT MET'}")
x = lambda v: f"{v:.2f}x"
t, g, g32 = last_json("train.txt"), last_json("gen_bf16.txt"), last_json("gen_f32.txt")
print("== summary (exit codes: train %s, generate bf16 %s, generate f32 %s)" % tuple(rcs))
if t:
  print(f"train: {t['device']}, {t['model']}, batch {t['batch']} x {t['seq']}, {t['dtype']}: "
        f"superalign {t['superalign_tokens_per_s']:,.0f} tokens/s, torch "
        f"{t['torch_tokens_per_s'] or 0:,.0f} tokens/s (torch.compile {t['torch_compile']})")
show("train MFU vs nominal peak", t and t["mfu_vs_nominal_peak"], 0.45, lambda v: f"{v:.1%}")
show("train tokens/s, superalign / torch", t and t["speedup_vs_torch"], 1.3, x)
for name, r in (("bf16", g), ("f32", g32)):
  if r:
    print(f"generate {name}: superalign {r['superalign_tokens_per_s']:,.0f} new tokens/s, "
          f"transformers {r['torch_tokens_per_s'] or 0:,.0f}; tokens agree {r['tokens_agree']}; "
          f"first call {r['superalign_first_call_s']} s")
  show(f"generate {name}, superalign / transformers", r and r["speedup_vs_transformers"], 1.0, x)
EOF
echo "outputs in $OUT"
