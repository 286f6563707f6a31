"""minimal — a multimodal LLM built from scratch, a file per component of the book's figure.

Modality encoder (`vit`, `text`, `clip`), input projector (`input_projector`), LLM backbone (`llm`, `lora`),
output projector (`output_projector`), modality generator (`modality_generator`); the glue of each side (`mllm`,
`output_side`); the Shapes world (`shapes`); using a trained CLIP (`zeroshot`, `retrieval`, `losses`); how each
shipped checkpoint is trained (`recipes`); plumbing (`transformer`, `tokenizer`, `train`, `weights`, `images`,
`accounting`, `env`, `notebook`, `plots`). ARCHITECTURE.md is the map.
"""

__version__ = "0.1.0"
