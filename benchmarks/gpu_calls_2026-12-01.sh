#!/usr/bin/env bash
# The device calls of 2026-12-01 (speed: dtype-keeping LayerNorm, unbind(2) q/k/v layout, measured alone and
# together against HF and open_clip): `bash benchmarks/gpu_calls_2026-12-01.sh one|step|ddp` on the GPU machine,
# from the repository root, open_clip's wheels in .whl/ (see benchmarks/NOTES_speed.md). Results go to $OUT.
set -u
cd "$(dirname "$0")"
source ./gpu_preamble.sh

case "$1" in
one)   # the main table (ours = the new model) with per-kernel-class profiles of all three models in every setting,
       # each change alone (ours_prev = the model before; _ln / _layout = one change added) and the candidates
       # not shipped (fused qkv parameter, memory-efficient SDPA, folded quick_gelu, 4 length buckets)
  timeout "$(left 560)" python3 speed_variants.py --config b32 --modes eager,graphed,compiled \
    --models ours,hf,open_clip --repeats 5 --iters 8 \
    --variants ours_prev,ours_prev_ln,ours_prev_layout,ours_qkvp,ours_effic,ours_fold_mlp,ours_buckets4 \
    --compile-models ours,hf,open_clip,ours_prev,ours_qkvp,graphed:ours_prev,graphed:ours_prev_ln,graphed:ours_prev_layout,graphed:ours_qkvp,graphed:ours_effic,graphed:ours_fold_mlp \
    --profile "$OUT/prof" --profile-models eager:ours,eager:hf,eager:open_clip,compiled:ours,compiled:hf,compiled:open_clip,graphed:ours,graphed:hf,graphed:open_clip,eager:ours_prev,graphed:ours_prev,compiled:ours_prev,compiled:ours_qkvp \
    --out "$OUT/main.json" > /dev/null 2> "$OUT/main.log"
  ;;
step)  # the final table in separate processes (a process that has compiled keeps inductor's worker pool, which
       # made the eager rounds of `one` spread 24-38 %): eager + graphed; compiled + reduce-overhead; then the
       # whole training step (fused AdamW, ours with the gathered loss) swept over batch 256, 512, 1024
  timeout 140 python3 speed_variants.py --config b32 --modes eager,graphed --models ours,hf,open_clip \
    --variants ours_prev --repeats 7 --iters 8 --out "$OUT/eager_graphed.json" > /dev/null 2> "$OUT/eager_graphed.log"
  timeout "$(left 445)" python3 speed.py --config b32 --modes compiled,reduce-overhead --models ours,hf,open_clip \
    --repeats 5 --iters 8 --profile "$OUT/prof" --profile-models reduce-overhead:ours \
    --out "$OUT/compiled.json" > /dev/null 2> "$OUT/compiled.log"
  timeout "$(left 590)" python3 speed.py --config b32 --optimizer fused --batches 256,512,1024 --modes eager,graphed \
    --models ours,hf,open_clip --repeats 2 --iters 4 --out "$OUT/whole_step_sweep.json" > /dev/null 2> "$OUT/sweep.log"
  ;;
sweep) # (the x2 machine was not lent for `ddp`) the whole training step in eager swept over batch 256/512/1024,
       # the graphed forward+backward step at 512/1024, and the shipped loop against the lean one on one GPU
  timeout 140 python3 speed.py --config b32 --optimizer fused --batches 256,512,1024 --modes eager \
    --models ours,hf,open_clip --repeats 2 --iters 4 --out "$OUT/whole_step_eager.json" > /dev/null 2> "$OUT/sweep.log"
  timeout "$(left 250)" python3 speed.py --config b32 --batches 512,1024 --modes graphed --models ours,hf,open_clip \
    --repeats 2 --iters 4 --out "$OUT/graphed_sweep.json" > /dev/null 2>> "$OUT/sweep.log"
  for loop in train lean; do CUDA_VISIBLE_DEVICES=0 timeout 60 torchrun --standalone --nproc_per_node 1 train_ddp.py \
    --config b32 --synthetic --steps 60 --timed-from 20 --batch 256 --loop $loop --out "$OUT/one_$loop.json" \
    >> "$OUT/sweep.log" 2>&1; done
  python3 -c "import json; [print('##', l, json.load(open('$OUT/one_'+l+'.json'))['step_ms']) for l in ('train', 'lean')]"
  ;;
ddp)   # 2 GPUs at 256 per GPU, each with its 1-GPU baseline in the same call: the shipped loop (minimal.train.train,
       # losses now read back every 50 steps), a profile of the 2-GPU step, compiled
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  D=/tmp/ddp; mkdir -p $D
  run() { local n=$1 name=$2; shift 2
    if [ "$n" = 1 ]; then CUDA_VISIBLE_DEVICES=0 timeout 150 torchrun --standalone --nproc_per_node 1 train_ddp.py "$@" --out "$D/$name.json"
    else timeout 150 torchrun --standalone --nproc_per_node 2 train_ddp.py "$@" --out "$D/$name.json"; fi >> "$OUT/ddp.log" 2>&1; }
  B="--config b32 --synthetic --steps 60 --timed-from 20"
  run 1 one_train $B --batch 256
  run 2 two_train $B --batch 512 --ddp view --single "$D/one_train.json"
  run 2 two_train_prof $B --batch 512 --ddp view --profile "$OUT/prof"
  run 1 one_compiled $B --batch 256 --compile
  run 2 two_compiled $B --batch 512 --ddp view --compile --single "$D/one_compiled.json"
  python3 -c "import json,glob,os; r={os.path.basename(f)[:-5]: json.load(open(f)) for f in sorted(glob.glob('$D/*.json'))}; json.dump(r, open('$OUT/ddp_all.json','w'), indent=1); [print('##', k, v.get('samples_per_s'), v.get('step_ms'), v.get('step_ms_per_rank'), v.get('scaling_efficiency')) for k, v in r.items()]"
  ;;
esac
grep -h "^## \|FAILED\|Error" "$OUT"/*.log 2>/dev/null | tail -80
echo "elapsed $((SECONDS - T0)) s"
