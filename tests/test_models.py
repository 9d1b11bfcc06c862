"""The sequence classifier for each recurrent cell."""

from __future__ import annotations

import pytest
import torch

from reprolab.config import Cell, ModelConfig
from reprolab.models import build_model


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_output_shape_for_each_cell(cell, layers):
    model = build_model(
        ModelConfig(
            cell=Cell(cell), hidden_size=8, num_layers=layers, dropout=0.3 if layers > 1 else 0.0, output_dropout=0.3
        ),
        input_size=5,
        num_classes=3,
    )
    logits = model(torch.randn(4, 7, 5))
    assert logits.shape == (4, 3)
    assert type(model.recurrent).__name__ == cell.upper()


def test_dropout_acts_only_in_train_mode():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=Cell.rnn, hidden_size=16, num_layers=2, dropout=0.5, output_dropout=0.5), 4, 2)
    x = torch.randn(8, 6, 4)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))
