"""minimal.zeroshot: prompts, ensembled classifier weights, Recall@K against brute-force references, bad input."""

import random

import pytest
import torch
import torch.nn.functional as F

from minimal import zeroshot as zs


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
    assert zs.fill("a {} shape", "orange") == "an orange shape"
    assert zs.fill("a photo of a {}.", "red circle") == "a photo of a red circle."
    assert zs.fill(zs.LABEL_ONLY, "star") == "star"
    p = zs.SHAPES_PROMPTS["position"]
    assert "a shape on the left" in p.texts("left")


def test_every_shapes_task_has_an_ensemble_of_at_least_five():
    from minimal.data import ZERO_SHOT_TASKS
    for name, task in ZERO_SHOT_TASKS.items():
        prompts = zs.SHAPES_PROMPTS[name]
        assert len(prompts.templates) >= 5, name
        texts = zs.prompt_texts(task.labels, prompts)
        assert len({t for group in texts for t in group}) == len(task.labels) * len(prompts.templates), name


def test_classifier_weights_are_the_renormalised_mean_of_normalised_embeddings():
    enc = fake_encoder()
    labels, templates = ["circle", "square", "star"], ["a {}", "a small {}", "there is one shape: a {}"]
    w = zs.classifier_weights(enc, labels, templates)
    assert w.shape == (16, 3)
    for c, label in enumerate(labels):
        e = F.normalize(enc([t.format(label) for t in templates]), dim=-1).mean(0)
        torch.testing.assert_close(w[:, c], e / e.norm())
    torch.testing.assert_close(w.norm(dim=0), torch.ones(3))
    # one template: the classifier is just that prompt's normalised embedding
    w1 = zs.classifier_weights(enc, labels, ["a {}"])
    torch.testing.assert_close(w1.T, F.normalize(enc(["a circle", "a square", "a star"]), dim=-1))


def test_predict_picks_the_nearest_class():
    w = F.normalize(torch.randn(8, 4), dim=0)
    images = w.T[[2, 0, 3, 1]] * 5 + 0.01 * torch.randn(4, 8)
    assert zs.predict(images, w).tolist() == [2, 0, 3, 1]
    assert zs.accuracy(zs.predict(images, w), torch.tensor([2, 0, 3, 3])) == 0.75


@pytest.mark.parametrize("labels, match", [([], "empty"), (["red", "blue", "red"], "duplicate"),
                                           ("red", "not one string")])
def test_bad_labels_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        zs.classifier_weights(fake_encoder(), labels)


def test_bad_templates_are_refused():
    with pytest.raises(ValueError, match="placeholder"):
        zs.classifier_weights(fake_encoder(), ["red"], ["a photo"])
    with pytest.raises(ValueError, match="at least one template"):
        zs.classifier_weights(fake_encoder(), ["red"], [])


def test_mismatched_embedding_widths_are_refused():
    with pytest.raises(ValueError, match="widths differ"):
        zs.predict(torch.randn(5, 32), torch.randn(16, 3))
    with pytest.raises(ValueError, match="widths differ"):
        zs.retrieval_metrics(torch.randn(5, 32), torch.randn(5, 16))
    with pytest.raises(ValueError, match="2-D"):
        zs.similarity(torch.randn(5), torch.randn(5, 16))


# --------------------------------------------------------------------------------------------------------- Recall@K

def brute_force_hit(scores: list[float], positive: list[bool], k: int) -> bool:
    """Sort the gallery best first, ties broken against the model (negatives before positives); any positive
    among the first k?"""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], positive[j]))
    return any(positive[j] for j in order[:k])


def brute_force_recalls(scores: torch.Tensor, text_to_image: list[int], ks) -> dict[str, float]:
    m, n = scores.shape
    out = {}
    for k in ks:
        t2i = [brute_force_hit(scores[i].tolist(), [j == text_to_image[i] for j in range(n)], k) for i in range(m)]
        i2t = [brute_force_hit(scores[:, j].tolist(), [text_to_image[i] == j for i in range(m)], k)
               for j in range(n)]
        out[f"t2i_r{k}"], out[f"i2t_r{k}"] = sum(t2i) / m, sum(i2t) / n
    return out


def clip_benchmark_recall(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """CLIP_benchmark's recall_at_k(...) > 0, re-derived: top-k by torch.topk, any positive among them."""
    top = scores.topk(k, dim=1).indices
    return positives.gather(1, top).any(dim=1).float().mean().item()


@pytest.mark.parametrize("seed", range(5))
def test_recall_equals_brute_force_with_ties_and_several_captions(seed):
    rng = random.Random(seed)
    n_images = rng.randint(3, 12)
    text_to_image = list(range(n_images)) + [rng.randrange(n_images) for _ in range(rng.randint(0, 20))]
    rng.shuffle(text_to_image)
    # integer scores from a tiny range: many ties, within rows and across positives/negatives
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (len(text_to_image), n_images), generator=g).float()
    ks = [k for k in (1, 2, 3, 5, 10) if k <= n_images]
    positives = zs.paired_positives(text_to_image, n_images)
    want = brute_force_recalls(scores, text_to_image, ks)
    for k in ks:
        assert zs.recall_at_k(scores, positives, k) == pytest.approx(want[f"t2i_r{k}"])
        assert zs.recall_at_k(scores.T, positives.T, k) == pytest.approx(want[f"i2t_r{k}"])


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_metrics_equal_brute_force_and_clip_benchmark_on_embeddings(seed):
    g = torch.Generator().manual_seed(seed)
    n_images, width = 15, 8
    text_to_image = torch.cat([torch.arange(n_images), torch.randint(0, n_images, (25,), generator=g)])
    images = torch.randn(n_images, width, generator=g)
    texts = images[text_to_image] + 1.2 * torch.randn(len(text_to_image), width, generator=g)
    got = zs.retrieval_metrics(images, texts, text_to_image, ks=(1, 5, 10))
    scores = F.normalize(texts, dim=-1) @ F.normalize(images, dim=-1).T
    want = brute_force_recalls(scores, text_to_image.tolist(), (1, 5, 10))
    positives = zs.paired_positives(text_to_image, n_images)
    for key in want:
        assert got[key] == pytest.approx(want[key])
    for k in (1, 5, 10):   # continuous scores have no ties: identical to CLIP_benchmark
        assert got[f"t2i_r{k}"] == pytest.approx(clip_benchmark_recall(scores, positives, k))
        assert got[f"i2t_r{k}"] == pytest.approx(clip_benchmark_recall(scores.T, positives.T, k))
    assert 0 < got["t2i_r1"] <= got["t2i_r5"] <= got["t2i_r10"] <= 1


def test_perfect_constant_and_tied_models():
    emb = torch.eye(6)
    assert set(zs.retrieval_metrics(emb, emb, ks=(1,)).values()) == {1.0}
    # a model that scores everything the same earns nothing until K covers every negative
    same = torch.ones(6, 4)
    r = zs.retrieval_metrics(same, same, ks=(1, 5, 6))
    assert r["t2i_r1"] == r["t2i_r5"] == 0.0 and r["t2i_r6"] == 1.0


def test_semantic_positives_count_any_image_with_the_same_key():
    # captions 0, 1 ask for "red circle"; images 0 and 2 are red circles. Caption 0's paired image is 0.
    text_keys, image_keys = ["red circle", "red circle", "blue star"], ["red circle", "blue star", "red circle"]
    pos = zs.key_positives(text_keys, image_keys)
    assert pos.tolist() == [[True, False, True], [True, False, True], [False, True, False]]
    scores = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.3, 0.1], [0.1, 0.8, 0.2]])
    paired = zs.paired_positives([0, 2, 1], 3)
    assert zs.recall_at_k(scores, paired, 1) == pytest.approx(1 / 3)   # caption 0 found the *other* red circle
    assert zs.recall_at_k(scores, pos, 1) == pytest.approx(2 / 3)


def test_search_returns_the_best_gallery_items():
    gallery = torch.eye(5)
    values, idx = zs.search(gallery[[3, 1]] + 0.1, gallery, k=2)
    assert idx[:, 0].tolist() == [3, 1] and values.shape == (2, 2)


def test_bad_retrieval_input_is_refused():
    images, texts = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="larger than the gallery"):
        zs.retrieval_metrics(images, texts, ks=(5,))
    with pytest.raises(ValueError, match="larger than the gallery"):
        zs.search(texts, images, k=10)
    with pytest.raises(ValueError, match="positive int"):
        zs.recall_at_k(torch.randn(3, 3), torch.eye(3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="text_to_image"):
        zs.retrieval_metrics(images, torch.randn(6, 8))
    with pytest.raises(ValueError, match="outside"):
        zs.retrieval_metrics(images, texts, [0, 1, 2, 7])
    with pytest.raises(ValueError, match="no caption"):
        zs.retrieval_metrics(images, texts, [0, 1, 2, 2], ks=(1,))
    with pytest.raises(ValueError, match="no positive"):
        zs.recall_at_k(torch.randn(2, 3), torch.tensor([[True, False, False], [False] * 3]), 1)
    with pytest.raises(ValueError, match="bool"):
        zs.recall_at_k(torch.randn(2, 3), torch.ones(2, 3), 1)


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

    encode_image, encode_text = zs.encoders(Toy(), tok, batch_size=2)
    assert encode_image(torch.rand(5, 3, 8, 8)).shape == (5, 4)
    assert encode_text(["a", "bb", "ccc"]).shape == (3, 4)
    w = zs.classifier_weights(encode_text, ["circle", "square"], zs.SHAPES_PROMPTS["shape"])
    assert w.shape == (4, 2)


def test_encoders_give_the_same_features_for_hf_clip_and_ours(tmp_path):
    transformers = pytest.importorskip("transformers")
    from minimal.clip import CLIP
    from minimal.tokenizer import shapes_tokenizer

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
    pixels = torch.randn(3, 3, 16, 16)
    results = []
    for model in (hf, ours):
        encode_image, encode_text = zs.encoders(model, tok, batch_size=2)
        w = zs.classifier_weights(encode_text, labels, zs.SHAPES_PROMPTS["colour_shape"])
        results.append((zs.embed(encode_image, pixels), w))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-5)


def test_caption_positives_mark_every_image_a_sentence_is_true_of():
    truths = [{"a red circle", "a small red circle"}, {"a blue star"}, {"a red circle", "a large red circle"}]
    pos = zs.caption_positives(["a red circle", "a blue star", "a green cross"], truths)
    assert pos.tolist() == [[True, False, True], [False, True, False], [False, False, False]]
    with pytest.raises(ValueError, match="one string"):
        zs.caption_positives(["a"], ["a red circle"])
