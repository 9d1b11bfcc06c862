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


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_portable_kernels_compute_pytorchs_layers(cell, monkeypatch):
    """`reprolab.kernels` is the function nn.RNN/LSTM/GRU and nn.Linear compute (other rounding only),
    forward and backward, padded sequences included: a model trained in one mode runs in the other."""
    from reprolab import numerics
    from reprolab.models import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier(5, 3, cell=cell, hidden_size=8, num_layers=2).eval()
    x = torch.randn(6, 9, 5)
    x[1, 4:] = float("nan")  # padded at its end
    outputs = {}
    for mode in numerics.MODES:
        monkeypatch.setenv(numerics.MODE_VARIABLE, mode)
        model.zero_grad()
        logits = model(x)
        logits.square().sum().backward()
        outputs[mode] = (logits.detach(), [p.grad.clone() for p in model.parameters()])
    portable, native = outputs["portable"], outputs["native"]
    torch.testing.assert_close(portable[0], native[0], rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(portable[1], native[1]):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_the_portable_tanh_is_tanh():
    from reprolab import kernels

    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([0.0, 1e-30, -1e-8, 8.9, 9.1])]).requires_grad_()
    y = kernels.tanh(x)
    torch.testing.assert_close(y, torch.tanh(x), rtol=2e-7, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, 1 - torch.tanh(x.detach()) ** 2, rtol=1e-6, atol=3e-7)
