"""minimal — a multimodal LLM built from scratch, one concept per file.

Modality encoder (`vit`), text tower (`text`), CLIP (`clip`, `losses`, `zeroshot`), input projector (`projector`),
frozen LLM backbone (`llm`), the multimodal LLM (`mllm`), output projector + modality generator (`generator`),
and the plumbing every chapter shares (`env`, `data`, `train`, `plots`).
"""

__version__ = "0.1.0"
