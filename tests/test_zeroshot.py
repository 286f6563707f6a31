"""minimal.zeroshot: prompts, the Shapes tasks' prompts, ensembled classifier weights, encoders, bad input.

Retrieval (Recall@K) is tested in test_retrieval.py."""

import pytest
import torch
import torch.nn.functional as F

from minimal import zeroshot
from minimal.clip import CLIP
from minimal.shapes import ZERO_SHOT_TASKS
from minimal.tokenizer import shapes_tokenizer


def fake_encoder(width: int = 16):
    """A deterministic 'text tower': each string -> a fixed random vector (seeded by the string's bytes)."""
    def encode(texts):
        out = []
        for t in texts:
            g = torch.Generator().manual_seed(sum((i + 1) * b for i, b in enumerate(t.encode())) % 2**31)
            out.append(torch.randn(width, generator=g) * 3)
        return torch.stack(out)
    return encode


# ---------------------------------------------------------------------------------------------------------- prompts

def test_fill_fixes_the_article_and_uses_class_phrases():
    assert zeroshot.fill("a {} shape", "orange") == "an orange shape"
    assert zeroshot.fill("a photo of a {}.", "red circle") == "a photo of a red circle."
    assert zeroshot.fill(zeroshot.LABEL_ONLY, "star") == "star"
    p = zeroshot.Prompts(("a shape {}", "a circle {}"), {"left": "on the left", "top": "at the top"})
    assert "a shape on the left" in p.texts("left")
    position = zeroshot.task_prompts("position")[ZERO_SHOT_TASKS["position"].labels.index("left")]
    assert "a circle on the left" in position


def test_every_shapes_task_has_an_ensemble_of_at_least_five():
    """task_prompts (SHAPES_PROMPTS was removed): one ensemble per label, no prompt shared by two labels. Every task
    but colour_shape averages at least five prompts; colour_shape's one prompt is the caption phrase itself."""
    for name, task in ZERO_SHOT_TASKS.items():
        texts = zeroshot.task_prompts(name)
        assert len(texts) == len(task.labels), name
        assert zeroshot.prompt_texts(task.labels, texts) == texts, name         # written-out prompts pass through
        if name == "colour_shape":
            assert texts == [[("an " if label[0] in "aeiou" else "a ") + label] for label in task.labels]
        else:
            assert min(len(group) for group in texts) >= 5, name
        owners = [set(group) for group in texts]
        assert sum(len(s) for s in owners) == len(set().union(*owners)), name   # no prompt names two labels


def test_classifier_weights_are_the_renormalised_mean_of_normalised_embeddings():
    enc = fake_encoder()
    labels, templates = ["circle", "square", "star"], ["a {}", "a small {}", "there is one shape: a {}"]
    w = zeroshot.classifier_weights(enc, labels, templates)
    assert w.shape == (16, 3)
    for c, label in enumerate(labels):
        e = F.normalize(enc([t.format(label) for t in templates]), dim=-1).mean(0)
        torch.testing.assert_close(w[:, c], e / e.norm())
    torch.testing.assert_close(w.norm(dim=0), torch.ones(3))
    # one template: the classifier is just that prompt's normalised embedding
    w1 = zeroshot.classifier_weights(enc, labels, ["a {}"])
    torch.testing.assert_close(w1.T, F.normalize(enc(["a circle", "a square", "a star"]), dim=-1))


def test_predict_picks_the_nearest_class():
    w = F.normalize(torch.randn(8, 4), dim=0)
    images = w.T[[2, 0, 3, 1]] * 5 + 0.01 * torch.randn(4, 8)
    assert zeroshot.predict(images, w).tolist() == [2, 0, 3, 1]
    assert zeroshot.accuracy(zeroshot.predict(images, w), torch.tensor([2, 0, 3, 3])) == 0.75


@pytest.mark.parametrize("labels, match", [([], "empty"), (["red", "blue", "red"], "duplicate"),
                                           ("red", "not one string")])
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        zeroshot.classifier_weights(fake_encoder(), labels)


def test_bad_templates_are_refused():
    with pytest.raises(ValueError, match="placeholder"):
        zeroshot.classifier_weights(fake_encoder(), ["red"], ["a photo"])
    with pytest.raises(ValueError, match="at least one template"):
        zeroshot.classifier_weights(fake_encoder(), ["red"], [])


def test_mismatched_embedding_widths_are_refused():
    with pytest.raises(ValueError, match="widths differ"):
        zeroshot.predict(torch.randn(5, 32), torch.randn(16, 3))


def test_encoders_work_for_a_model_with_encode_methods():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 4)

        def encode_image(self, x):
            return self.proj(x.mean(dim=(2, 3)))

        def encode_text(self, ids):
            return self.proj(ids.float()[:, :3])

    def tok(texts, context_length=5):
        return torch.tensor([[len(t), t.count("a"), 1, 0, 0][:context_length] for t in texts])

    encode_image, encode_text = zeroshot.encoders(Toy(), tok, batch_size=2)
    assert encode_image(torch.rand(5, 3, 8, 8)).shape == (5, 4)
    assert encode_text(["a", "bb", "ccc"]).shape == (3, 4)
    w = zeroshot.classifier_weights(encode_text, ["circle", "square"], zeroshot.task_prompts("shape")[:2])
    assert w.shape == (4, 2)


def test_encoders_give_the_same_features_for_hf_clip_and_ours(tmp_path):
    transformers = pytest.importorskip("transformers")

    tok = shapes_tokenizer(n_scenes=50, vocab_size=400)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id),
        vision_config=dict(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2), projection_dim=16)
    torch.manual_seed(0)
    hf = transformers.CLIPModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = CLIP.from_pretrained(tmp_path)
    labels = ["red circle", "blue star", "orange square"]
    prompts = [zeroshot.task_prompts("colour_shape")[ZERO_SHOT_TASKS["colour_shape"].labels.index(label)]
               for label in labels]
    pixels = torch.randn(3, 3, 16, 16)
    results = []
    for model in (hf, ours):
        encode_image, encode_text = zeroshot.encoders(model, tok, batch_size=2)
        w = zeroshot.classifier_weights(encode_text, labels, prompts)
        results.append((zeroshot.embed(encode_image, pixels), w))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)
