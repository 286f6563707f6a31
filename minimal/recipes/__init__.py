"""How each shipped checkpoint is trained: batches, stages, the recipe dataclass, the card and the command line.

Models never import a recipe; recipes, benchmarks and chapters import models.

    python -m minimal.recipes.clip                     # the tiny CLIP (chapter 04)
    python -m minimal.recipes.output_side generator    # the modality generator (chapter 09)
    python -m minimal.recipes.output_side projector    # the output projector (chapter 09)
    python -m minimal.recipes.mllm                     # the MLLM's input projector + LoRA adapters (chapter 08)
"""
