#!/usr/bin/env bash
# The device calls of 2026-12-02 (speed: does an SDPA backend with less host work per call than cuDNN's pay in the
# host-bound settings?): `bash benchmarks/gpu_calls_2026-12-02.sh compiled|eager|final|qkvp|qkvp2|shipped` on the GPU machine, from the
# repository root, open_clip's wheels in .whl/ (see benchmarks/NOTES_speed.md). Results go to $OUT.
set -u
cd "$(dirname "$0")"
source ./gpu_preamble.sh
V=ours_prefer_effic,ours_prefer_flash
case "$1" in
compiled)  # torch.compile's default and reduce-overhead, the three models and the two candidates, with host-side
           # profiles (where the host's time goes) of ours, the memory-efficient candidate, HF and open_clip
  timeout "$(left 570)" python3 speed_variants.py --config b32 --modes compiled,reduce-overhead \
    --models ours,hf,open_clip --variants $V --repeats 7 --iters 8 \
    --compile-models compiled:ours,compiled:hf,compiled:open_clip,compiled:ours_prefer_effic,compiled:ours_prefer_flash,reduce-overhead:ours,reduce-overhead:ours_prefer_effic \
    --profile "$OUT/prof" --profile-models compiled:ours,compiled:ours_prefer_effic,compiled:open_clip,compiled:hf \
    --out "$OUT/compiled.json" > /dev/null 2> "$OUT/compiled.log"
  ;;
eager)     # eager and graphed (its own process: no compile workers), the same five, with eager profiles; then the
           # whole training step (fused AdamW, ours with the gathered loss) in eager for ours, the candidate, HF, open_clip
  timeout 240 python3 speed_variants.py --config b32 --modes eager,graphed --models ours,hf,open_clip --variants $V \
    --repeats 7 --iters 8 --profile "$OUT/prof" \
    --profile-models eager:ours,eager:ours_prefer_effic,eager:open_clip,eager:hf,graphed:ours,graphed:ours_prefer_effic \
    --out "$OUT/eager_graphed.json" > /dev/null 2> "$OUT/eager_graphed.log"
  timeout "$(left 560)" python3 speed_variants.py --config b32 --optimizer fused --modes eager \
    --models ours,hf,open_clip --variants ours_prefer_effic --repeats 5 --iters 8 \
    --out "$OUT/whole_step.json" > /dev/null 2> "$OUT/whole_step.log"
  ;;
final)     # after shipping the memory-efficient kernel (`transformer.attend`): the table, one call, two processes —
           # eager + graphed, then compiled + reduce-overhead — with ours_prev_attn (PyTorch's default kernel) beside it
  timeout 170 python3 speed_variants.py --config b32 --modes eager,graphed --models ours,hf,open_clip \
    --variants ours_prev_attn --repeats 9 --iters 8 --profile "$OUT/prof" \
    --profile-models eager:ours,eager:ours_prev_attn,graphed:ours,graphed:ours_prev_attn \
    --out "$OUT/eager_graphed.json" > /dev/null 2> "$OUT/eager_graphed.log"
  timeout "$(left 575)" python3 speed_variants.py --config b32 --modes compiled,reduce-overhead \
    --models ours,hf,open_clip --variants ours_prev_attn --repeats 9 --iters 8 \
    --compile-models compiled:ours,compiled:hf,compiled:open_clip,compiled:ours_prev_attn,reduce-overhead:ours \
    --profile "$OUT/prof" --profile-models compiled:ours,reduce-overhead:ours \
    --out "$OUT/compiled.json" > /dev/null 2> "$OUT/compiled.log"
  ;;
qkvp)      # second round of the day: one fused qkv parameter (`ours_qkvp`, made once: no per-step concatenation of
           # three weights, one gradient instead of three) beside the shipped model, HF and open_clip; eager + graphed
           # in one process, then compiled. (Tried first, in a call that failed: LayerNorm outside autocast, so that
           # a bf16 input meets float32 γ/β in one kernel — CUDA's layer_norm refuses that mix, "expected scalar
           # type BFloat16 but found Float", torch 2.11.)
  timeout 200 python3 speed_variants.py --config b32 --modes eager,graphed --models ours,hf,open_clip \
    --variants ours_qkvp --repeats 11 --iters 8 --out "$OUT/eager_graphed.json" > /dev/null 2> "$OUT/eager_graphed.log"
  timeout "$(left 575)" python3 speed_variants.py --config b32 --modes compiled --models ours,hf,open_clip \
    --variants ours_qkvp --repeats 9 --iters 8 --out "$OUT/compiled.json" > /dev/null 2> "$OUT/compiled.log"
  ;;
qkvp2)     # the fused qkv parameter once more, as a user runs it and with the host's time split by kind of call:
           # the whole training step (fused AdamW) in eager, then the compiled forward+backward, each with profiles
  timeout 230 python3 speed_variants.py --config b32 --optimizer fused --modes eager --models ours,hf,open_clip \
    --variants ours_qkvp --repeats 9 --iters 8 --profile "$OUT/prof" --profile-models eager:ours,eager:ours_qkvp \
    --out "$OUT/whole_step.json" > /dev/null 2> "$OUT/whole_step.log"
  timeout "$(left 560)" python3 speed_variants.py --config b32 --modes compiled --models ours,open_clip \
    --variants ours_qkvp --repeats 9 --iters 8 --profile "$OUT/prof" \
    --profile-models compiled:ours,compiled:ours_qkvp,compiled:open_clip \
    --out "$OUT/compiled.json" > /dev/null 2> "$OUT/compiled.log"
  ;;
shipped)   # after shipping the stacked q/k/v parameter: the shipped model beside HF and open_clip, eager + graphed (the
           # device time left held no compiled process), with `ours_prev_qkv` (the model before it) beside them
  timeout 175 python3 speed_variants.py --config b32 --modes eager,graphed --models ours,hf,open_clip \
    --variants ours_prev_qkv --repeats 7 --iters 8 --out "$OUT/eager_graphed.json" > /dev/null 2> "$OUT/eager_graphed.log"
  ;;
esac
grep -h "^## \|FAILED\|Error\|# profile" "$OUT"/*.log 2>/dev/null | cut -c1-400 | tail -60
echo "elapsed $((SECONDS - T0)) s"
