"""minimal.accounting: parameter counts per component and the trained fraction."""

import pytest
import torch
from torch import nn

from minimal.accounting import ParameterTable, count_parameters, human


def test_counts_match_the_layer_formula():
    assert count_parameters(nn.Linear(10, 4)) == 10 * 4 + 4
    assert count_parameters(nn.Linear(10, 4, bias=False)) == 40
    assert count_parameters(None) == 0


def test_tied_weights_are_counted_once():
    emb = nn.Embedding(100, 8)
    head = nn.Linear(8, 100, bias=False)
    head.weight = emb.weight
    assert count_parameters(nn.ModuleList([emb, head])) == 800


def test_trainable_only_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 4 * 2 + 2


def test_meta_device_costs_no_memory_but_counts_the_same():
    with torch.device("meta"):
        big = nn.Linear(4096, 4096)
    assert big.weight.is_meta
    assert count_parameters(big) == 4096 * 4096 + 4096


def test_table_totals_and_fraction():
    table = ParameterTable("toy").add("encoder", nn.Linear(10, 10), trained=False).add("projector", 10, trained=True)
    assert table.total == 120
    assert table.trained == 10
    assert table.trained_fraction == pytest.approx(10 / 120)
    text = table.markdown()
    assert "| projector | 10 |" in text and "trained" in text and "frozen" in text


def test_empty_table_and_negative_counts_are_errors():
    with pytest.raises(ValueError, match="empty"):
        _ = ParameterTable("nothing").trained_fraction
    with pytest.raises(ValueError, match="negative"):
        ParameterTable("bad").add("x", -1, trained=False)


@pytest.mark.parametrize(("n", "text"), [(7_063_427_072, "7.063 B"), (20_979_712, "20.98 M"), (74_304, "74.3 k"),
                                         (512, "512")])
def test_human_readable_numbers(n, text):
    assert human(n) == text
