# Sourced by benchmarks/gpu_calls_*.sh on the GPU machine, from benchmarks/: the environment, open_clip's wheels
# from .whl/ beside the machine's own packages, a clock (`left N`: how many of N seconds are not yet used), and the
# machine's facts in $OUT/machine.txt.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR="$PWD/../.inductor_cache"   # ignored by git: kept on a warm machine between calls
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ../.whl/*.whl \
    ; export PYTHONPATH="/tmp/site:$(cd .. && pwd)"
T0=$SECONDS
left() { echo $(( $1 - (SECONDS - T0) )); }
{ nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,temperature.gpu,power.draw,utilization.gpu --format=csv
  nproc; python3 -c "import torch, transformers, open_clip; print(torch.__version__, transformers.__version__, open_clip.__version__)"
} > "$OUT/machine.txt" 2>&1
