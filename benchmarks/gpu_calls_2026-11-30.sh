#!/usr/bin/env bash
# The device calls of issue #18 (one H200, then two), 2026-11-30: `bash benchmarks/gpu_calls_2026-11-30.sh one|two|ddp`
# Run from the repository root on the GPU machine; results go to $OUT (see benchmarks/NOTES_speed.md).
set -u
cd "$(dirname "$0")"
source ./gpu_preamble.sh

case "$1" in
one)   # the main table with profiles, every variant alone and the combined one, side by side; then the whole
       # training step (fused AdamW, gathered loss) swept over batch 256, 512, 1024
  timeout "$(left 400)" python3 speed_variants.py --config b32 --modes eager,compiled,graphed \
    --models ours,hf,open_clip --repeats 3 --iters 8 \
    --variants ours_combo,ours_ln,ours_nosync,ours_deferred,ours_qkv,ours_fold_mlp,ours_effic,ours_buckets4 \
    --compile-models ours,hf,open_clip,ours_combo,ours_ln,graphed:ours_nosync,graphed:ours_deferred,graphed:ours_qkv,graphed:ours_fold_mlp,graphed:ours_effic \
    --profile "$OUT/prof" --profile-models eager:ours,eager:hf,eager:open_clip,compiled:ours,compiled:hf,compiled:open_clip,graphed:ours,graphed:hf,graphed:open_clip,compiled:ours_combo,compiled:ours_ln,eager:ours_nosync \
    --out "$OUT/main.json" > /dev/null 2> "$OUT/main.log"
  timeout "$(left 520)" python3 speed_variants.py --config b32 --optimizer fused --batches 256,512,1024 \
    --modes eager,graphed --models ours,hf,open_clip --variants ours_combo --repeats 2 --iters 4 \
    --out "$OUT/sweep_whole_step.json" > /dev/null 2> "$OUT/sweep.log"
  ;;
ddp)   # 2 GPUs at 256 per GPU, each with its 1-GPU baseline: shipped loop, lean loop, compiled (lean); then, on
       # GPU 0 alone, the whole training step (fused AdamW) swept over batch 256/512/1024 (eager) and the
       # forward+backward step at 512/1024 (graphed)
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  D=/tmp/ddp; mkdir -p $D
  run() { local n=$1 name=$2; shift 2
    if [ "$n" = 1 ]; then CUDA_VISIBLE_DEVICES=0 timeout 150 torchrun --standalone --nproc_per_node 1 train_ddp.py "$@" --out "$D/$name.json"
    else timeout 150 torchrun --standalone --nproc_per_node 2 train_ddp.py "$@" --out "$D/$name.json"; fi >> "$OUT/ddp.log" 2>&1; }
  B="--config b32 --synthetic --steps 40 --timed-from 15"
  run 1 one_train $B --batch 256
  run 2 two_train $B --batch 512 --ddp view --single "$D/one_train.json"
  run 1 one_lean $B --batch 256 --loop lean
  run 2 two_lean $B --batch 512 --ddp view --loop lean --single "$D/one_lean.json"
  run 1 one_lean_compiled $B --batch 256 --loop lean --compile
  run 2 two_lean_compiled $B --batch 512 --ddp view --loop lean --compile --single "$D/one_lean_compiled.json"
  python3 -c "import json,glob,os; r={os.path.basename(f)[:-5]: json.load(open(f)) for f in sorted(glob.glob('$D/*.json'))}; json.dump(r, open('$OUT/ddp_all.json','w'), indent=1); [print('##', k, v.get('samples_per_s'), v.get('step_ms'), v.get('scaling_efficiency')) for k, v in r.items()]"
  export CUDA_VISIBLE_DEVICES=0
  timeout "$(left 300)" python3 speed_variants.py --config b32 --optimizer fused --batches 256,512,1024 --modes eager \
    --models ours,hf,open_clip --variants ours_combo --repeats 2 --iters 4 \
    --out "$OUT/sweep_whole_step.json" > /dev/null 2> "$OUT/sweep.log"
  timeout "$(left 345)" python3 speed_variants.py --config b32 --batches 512,1024 --modes graphed \
    --models ours,hf,open_clip --variants ours_combo --repeats 2 --iters 4 \
    --out "$OUT/sweep_graphed.json" > /dev/null 2>> "$OUT/sweep.log"
  ;;
esac
grep -h "^## \|FAILED\|Error" "$OUT"/*.log 2>/dev/null | tail -80
echo "elapsed $((SECONDS - T0)) s"
