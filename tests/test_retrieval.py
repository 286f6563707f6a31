"""minimal.retrieval: Recall@K against brute-force references (ties counted against the model), positives, search,
bad input."""

import random

import pytest
import torch
import torch.nn.functional as F

from minimal import retrieval


def test_mismatched_embedding_widths_are_refused():
    with pytest.raises(ValueError, match="widths differ"):
        retrieval.retrieval_metrics(torch.randn(5, 32), torch.randn(5, 16))
    with pytest.raises(ValueError, match="2-D"):
        retrieval.similarity(torch.randn(5), torch.randn(5, 16))


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
    positives = retrieval.paired_positives(text_to_image, n_images)
    want = brute_force_recalls(scores, text_to_image, ks)
    for k in ks:
        assert retrieval.recall_at_k(scores, positives, k) == pytest.approx(want[f"t2i_r{k}"])
        assert retrieval.recall_at_k(scores.T, positives.T, k) == pytest.approx(want[f"i2t_r{k}"])


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_metrics_equal_brute_force_and_clip_benchmark_on_embeddings(seed):
    g = torch.Generator().manual_seed(seed)
    n_images, width = 15, 8
    text_to_image = torch.cat([torch.arange(n_images), torch.randint(0, n_images, (25,), generator=g)])
    images = torch.randn(n_images, width, generator=g)
    texts = images[text_to_image] + 1.2 * torch.randn(len(text_to_image), width, generator=g)
    got = retrieval.retrieval_metrics(images, texts, text_to_image, ks=(1, 5, 10))
    scores = F.normalize(texts, dim=-1) @ F.normalize(images, dim=-1).T
    want = brute_force_recalls(scores, text_to_image.tolist(), (1, 5, 10))
    positives = retrieval.paired_positives(text_to_image, n_images)
    for key in want:
        assert got[key] == pytest.approx(want[key])
    for k in (1, 5, 10):   # continuous scores have no ties: identical to CLIP_benchmark
        assert got[f"t2i_r{k}"] == pytest.approx(clip_benchmark_recall(scores, positives, k))
        assert got[f"i2t_r{k}"] == pytest.approx(clip_benchmark_recall(scores.T, positives.T, k))
    assert 0 < got["t2i_r1"] <= got["t2i_r5"] <= got["t2i_r10"] <= 1


def test_perfect_constant_and_tied_models():
    emb = torch.eye(6)
    assert set(retrieval.retrieval_metrics(emb, emb, ks=(1,)).values()) == {1.0}
    # a model that scores everything the same earns nothing until K covers every negative
    same = torch.ones(6, 4)
    r = retrieval.retrieval_metrics(same, same, ks=(1, 5, 6))
    assert r["t2i_r1"] == r["t2i_r5"] == 0.0 and r["t2i_r6"] == 1.0


def test_semantic_positives_count_any_image_with_the_same_key():
    # captions 0, 1 ask for "red circle"; images 0 and 2 are red circles. Caption 0's paired image is 0.
    text_keys, image_keys = ["red circle", "red circle", "blue star"], ["red circle", "blue star", "red circle"]
    pos = retrieval.key_positives(text_keys, image_keys)
    assert pos.tolist() == [[True, False, True], [True, False, True], [False, True, False]]
    scores = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.3, 0.1], [0.1, 0.8, 0.2]])
    paired = retrieval.paired_positives([0, 2, 1], 3)
    assert retrieval.recall_at_k(scores, paired, 1) == pytest.approx(1 / 3)   # caption 0 found the *other* red circle
    assert retrieval.recall_at_k(scores, pos, 1) == pytest.approx(2 / 3)


def test_search_returns_the_best_gallery_items():
    gallery = torch.eye(5)
    values, idx = retrieval.search(gallery[[3, 1]] + 0.1, gallery, k=2)
    assert idx[:, 0].tolist() == [3, 1] and values.shape == (2, 2)


def test_bad_retrieval_input_is_refused():
    images, texts = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="larger than the gallery"):
        retrieval.retrieval_metrics(images, texts, ks=(5,))
    with pytest.raises(ValueError, match="larger than the gallery"):
        retrieval.search(texts, images, k=10)
    with pytest.raises(ValueError, match="positive int"):
        retrieval.recall_at_k(torch.randn(3, 3), torch.eye(3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval.retrieval_metrics(images, torch.randn(6, 8))
    with pytest.raises(ValueError, match="outside"):
        retrieval.retrieval_metrics(images, texts, [0, 1, 2, 7])
    with pytest.raises(ValueError, match="no caption"):
        retrieval.retrieval_metrics(images, texts, [0, 1, 2, 2], ks=(1,))
    with pytest.raises(ValueError, match="no positive"):
        retrieval.recall_at_k(torch.randn(2, 3), torch.tensor([[True, False, False], [False] * 3]), 1)
    with pytest.raises(ValueError, match="bool"):
        retrieval.recall_at_k(torch.randn(2, 3), torch.ones(2, 3), 1)



def test_caption_positives_mark_every_image_a_sentence_is_true_of():
    truths = [{"a red circle", "a small red circle"}, {"a blue star"}, {"a red circle", "a large red circle"}]
    pos = retrieval.caption_positives(["a red circle", "a blue star", "a green cross"], truths)
    assert pos.tolist() == [[True, False, True], [False, True, False], [False, False, False]]
    with pytest.raises(ValueError, match="one string"):
        retrieval.caption_positives(["a"], ["a red circle"])
