#!/usr/bin/env bash
# The GPU benchmark run, in one go (about 8-9 minutes on one H100/H200); installs nothing.
#
#   bash benchmarks/gpu.sh            # from the repository root, in the project's environment
#   BUDGET=480 bash benchmarks/gpu.sh # a tighter overall limit in seconds (default 540)
#   SMOKE=1 bash benchmarks/gpu.sh    # the same plumbing on tiny shapes, any machine (no GPU
#                                     # required: checks the script, not speed)
#
# Llama-3.2-1B shape (16 layers x 2048, 32 heads, 8 key/value heads, MLP 8192, vocabulary 128256,
# tied embeddings, Llama 3 rotary scaling; random weights that transformers saves once, no
# download), bfloat16, superalign vs transformers + PyTorch (SDPA attention, torch.compile, bf16
# autocast, fused AdamW), alternating blocks:
# 1. train step (next-token loss, AdamW): MFU against the card's nominal dense bf16 peak, and
#    tokens/s against torch;
# 2. greedy KV-cached generation against LlamaForCausalLM.generate;
# 3. LoRA fine-tuning step (rank 16 on every attention and MLP weight, base frozen), superalign
#    alone (no PEFT here), set beside the full step's tokens/s.
# Then the 124M GPT-2 shape, as before: train step (sequence classifier, context 1024) and
# generation in bf16 and float32 (tokens checked equal).
# Last, interpretability against TransformerLens 3.9 on a Llama-3.2-1B-shaped model of its own
# (default rotary, which TransformerLens 3.9 computes; float32, no TF32 on either side):
# caching every site (run_with_cache, all hooks and only the sites superalign has) and the
# layer x position resid_pre patching grid (get_act_patch_resid_pre, grids compared); and the
# SAE train step against SAELens (benchmarks/sae.py) where that script exists, one small shape.
# Every step has its own timeout, cut to what is left of BUDGET seconds, so the run ends in time;
# a step that gets too little is skipped. Each refuses to run (exit 2, one line) if JAX or torch
# sees no GPU. Figures, then the targets, MET or NOT MET.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
# JAX and torch share the card in one process: JAX allocates as it goes rather than 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
BUDGET=${BUDGET:-540}
if [ -n "${SMOKE:-}" ]; then
  GPU="" LLAMA=llama_tiny B1=2 S1=32 GB=2 GP=8 GN=8 GPT=gpt_medium GSHAPE=tiny BATCH=2 SEQ=32
  STEPS=2 ROUNDS=1
  INTERP="--family gpt2 --layers 2 --width 64 --vocab 512" IB=2 IS=16 IGB=2 IGS=4 ICHUNK=1
  SAE_SHAPE=64x256x128
else
  GPU=--require-gpu LLAMA=llama_1b GPT=gpt2 GSHAPE=gpt2 STEPS=12 ROUNDS=3
  B1=${B1:-8} S1=${S1:-512} GB=${GB:-32} GP=${GP:-128} GN=${GN:-128}
  BATCH=${BATCH:-32} SEQ=${SEQ:-1024}
  INTERP="--family llama_1b" IB=${IB:-8} IS=${IS:-128} IGB=${IGB:-4} IGS=${IGS:-32}
  ICHUNK=${ICHUNK:-32} SAE_SHAPE=${SAE_SHAPE:-2048x16384x4096}
fi
SECONDS=0

# run NAME CAP CMD...: CMD under `timeout min(CAP, time left)`, its output in $OUT/NAME.txt and
# its exit status in $OUT/NAME.rc (124: timed out; "skipped": under 30 s were left).
run() {
  local name=$1 cap=$2 left=$((BUDGET - SECONDS))
  shift 2
  if [ "$left" -lt 30 ]; then
    echo "== $name: SKIPPED, ${left} s of the ${BUDGET} s budget left"
    echo skipped > "$OUT/$name.rc"
    return
  fi
  echo "== $name (timeout $((left < cap ? left : cap)) s, ${SECONDS} s in): $*"
  timeout "$((left < cap ? left : cap))" "$@" 2>&1 | grep --line-buffered -v -e 'Loading weights' \
      -e 'Writing model shards' | tee "$OUT/$name.txt"
  echo "${PIPESTATUS[0]}" > "$OUT/$name.rc"
}

python - <<'EOF' || exit 2
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
      "cuda" if torch.cuda.is_available() else "NO CUDA")
EOF
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true

run checkpoint 120 python -c "import sys; from benchmarks.train_step import save_llama
print('random $LLAMA saved by transformers in', save_llama(sys.argv[1], '$LLAMA'))" "$OUT/$LLAMA"
run llama_train 200 python benchmarks/train_step.py $GPU --checkpoint "$OUT/$LLAMA" \
    --dtype bfloat16 --batch "$B1" --seq "$S1" --steps "$STEPS" --rounds "$ROUNDS" --warmup 2
run llama_generate 120 python benchmarks/generate.py $GPU --checkpoint "$OUT/$LLAMA" \
    --dtype bfloat16 --batch "$GB" --prompt-len "$GP" --new-tokens "$GN" --rounds "$ROUNDS" \
    --per-round 2
run llama_lora 120 python benchmarks/train_step.py $GPU --checkpoint "$OUT/$LLAMA" --lora 16 \
    --skip-torch --dtype bfloat16 --batch "$B1" --seq "$S1" --steps "$STEPS" --rounds "$ROUNDS" \
    --warmup 2
rm -rf "${OUT:?}/$LLAMA"
run gpt2_train 150 python benchmarks/train_step.py $GPU --model "$GPT" --dtype bfloat16 \
    --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --rounds "$ROUNDS" --warmup 3
run gpt2_generate_bf16 75 python benchmarks/generate.py $GPU --shape "$GSHAPE" --dtype bfloat16 \
    --batch "$GB" --prompt-len "$GP" --new-tokens "$GN" --rounds "$ROUNDS" --per-round 2
run gpt2_generate_f32 75 python benchmarks/generate.py $GPU --shape "$GSHAPE" --dtype float32 \
    --batch "$GB" --prompt-len "$GP" --new-tokens "$GN" --rounds "$ROUNDS" --per-round 2
# shellcheck disable=SC2086  # $INTERP is several flags
run llama_interp 180 python benchmarks/interp.py $GPU --only peer $INTERP --peer-batch "$IB" \
    --peer-seq "$IS" --grid-batch "$IGB" --grid-seq "$IGS" --chunk "$ICHUNK" --rounds "$ROUNDS" \
    --per-round 2 --grid-rounds "$ROUNDS"
if [ -f benchmarks/sae.py ]; then
  run sae 90 python benchmarks/sae.py --kinds topk --shapes "$SAE_SHAPE" --rounds "$ROUNDS" \
      --per-round 2
fi

python - "$OUT" "$SECONDS" "$BUDGET" <<'EOF'
import json, os, sys
out, took, budget = sys.argv[1:]
def read(name):
  try:
    rc = open(os.path.join(out, name + ".rc")).read().strip()
  except OSError:
    rc = "not run"
  try:
    lines = [l for l in open(os.path.join(out, name + ".txt")) if l.startswith("{")]
    return rc, json.loads(lines[-1]) if lines else None
  except OSError:
    return rc, None
def show(label, value, target, fmt):
  if value is None:
    print(f"{label:48s} n/a        (target {fmt(target)})  MISSING")
  else:
    print(f"{label:48s} {fmt(value):10s} (target {fmt(target)})  "
          f"{'MET' if value >= target else 'NOT MET'}")
x, pct = lambda v: f"{v:.2f}x", lambda v: f"{v:.1%}"
runs = {n: read(n) for n in ("checkpoint", "llama_train", "llama_generate", "llama_lora",
                             "gpt2_train", "gpt2_generate_bf16", "gpt2_generate_f32",
                             "llama_interp", "sae")}
print(f"== summary ({took} s of the {budget} s budget; exit codes: "
      + ", ".join(f"{n} {rc}" for n, (rc, _) in runs.items()) + ")")
def train(name):
  t = runs[name][1]
  if t:
    print(f"{name}: {t['device']}, {t['model']}, batch {t['batch']} x {t['seq']}, {t['dtype']}: "
          f"superalign {t['superalign_tokens_per_s']:,.0f} tokens/s, torch "
          f"{t['torch_tokens_per_s'] or 0:,.0f} tokens/s (torch.compile {t['torch_compile']}); "
          f"other load {t['other_load']}")
  show(f"{name} MFU vs nominal peak", t and t["mfu_vs_nominal_peak"], 0.45, pct)
  show(f"{name} tokens/s, superalign / torch", t and t["speedup_vs_torch"], 1.3, x)
def generate(name):
  r = runs[name][1]
  if r:
    print(f"{name}: superalign {r['superalign_tokens_per_s']:,.0f} new tokens/s, transformers "
          f"{r['torch_tokens_per_s'] or 0:,.0f}; tokens agree {r['tokens_agree']}; first call "
          f"{r['superalign_first_call_s']} s")
  show(f"{name}, superalign / transformers", r and r["speedup_vs_transformers"], 1.0, x)
train("llama_train")
generate("llama_generate")
lora, full = runs["llama_lora"][1], runs["llama_train"][1]
if lora:
  mfu = lora["mfu_vs_nominal_peak"]
  print(f"llama_lora: superalign {lora['superalign_tokens_per_s']:,.0f} tokens/s, MFU "
        f"{'n/a' if mfu is None else pct(mfu)} (FLOPs of a frozen base); base frozen by "
        f"core.state: {lora['lora_base_frozen']}"
        + (f"; {lora['superalign_tokens_per_s'] / full['superalign_tokens_per_s']:.2f}x the full "
           "step's tokens/s" if full else ""))
else:
  print("llama_lora: MISSING")
train("gpt2_train")
generate("gpt2_generate_bf16")
generate("gpt2_generate_f32")
i = (runs["llama_interp"][1] or {}).get("transformer_lens")
if i:
  print(f"llama_interp ({i['family']}, {i['peer_device']}): caching {i['peer_batch']} x "
        f"{i['peer_seq']} tokens {i['cache_ms_default_threads']:.1f} ms vs run_with_cache "
        f"{i['tl_cache_ms_default_threads']:.1f} ms; grid of {i['grid_cells']} cells "
        f"{i['grid_ms_default_threads']:.0f} ms vs {i['tl_grid_ms_default_threads']:.0f} ms, "
        f"max |diff| {i['grid_max_abs_diff']:.1e}")
show("llama_interp caching, superalign / TransformerLens",
     i and i["cache_speedup_default_threads"], 2.0, x)
show("llama_interp caching, same sites only", i and i["cache_speedup_same_sites_default_threads"],
     2.0, x)
show("llama_interp patching grid, superalign / TransformerLens",
     i and i["grid_speedup_default_threads"], 4.0, x)
if os.path.exists("benchmarks/sae.py"):
  print("sae:", runs["sae"][1] or "MISSING")
EOF
echo "outputs in $OUT"
