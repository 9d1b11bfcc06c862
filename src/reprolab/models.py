"""The sequence classifier: a recurrent stack (RNN, LSTM or GRU) read at each sequence's last step.

This module imports torch and nothing of the project's configuration, so a model logged to
MLflow (which ships this package as code) loads where only torch is installed. In a process of
the portable numerics (`reprolab.numerics`) it computes with `reprolab.kernels`, elsewhere with
PyTorch's own layers: the same function and weights, other rounding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from reprolab import kernels, numerics

if TYPE_CHECKING:
    from reprolab.config import ModelConfig

RECURRENT_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceClassifier(nn.Module):
    """Recurrent layers -> output at the last real step -> dropout -> linear head: class logits.

    Inputs are [batch, steps, features]. A shorter sequence is padded at its end with steps whose
    features are all NaN; the head reads the output at the sequence's last real step, which a
    one-directional recurrent stack computes from the real steps only.
    `dropout` acts between recurrent layers (PyTorch's own `dropout` argument);
    `output_dropout` acts on that output before the head.
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        cell: str = "rnn",
        hidden_size: int = 32,
        num_layers: int = 2,
        dropout: float = 0.0,
        output_dropout: float = 0.0,
    ):
        super().__init__()
        # What rebuilds this model: the file format of `save_arrays` / `load_file`.
        self.init_args = {
            "input_size": input_size,
            "num_classes": num_classes,
            "cell": cell,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "dropout": dropout,
            "output_dropout": output_dropout,
        }
        self.recurrent = RECURRENT_CELLS[cell](
            input_size, hidden_size, num_layers=num_layers, dropout=dropout, batch_first=True
        )
        self.output_dropout = nn.Dropout(output_dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_classes] for inputs [batch, steps, features]."""
        portable = numerics.current_mode() == numerics.PORTABLE
        padding = torch.isnan(x).all(dim=2)
        padded = bool(padding.any())
        inputs = torch.nan_to_num(x, nan=0.0) if padded else x
        outputs = kernels.recurrent(self.recurrent, inputs) if portable else self.recurrent(inputs)[0]
        last = outputs[torch.arange(len(x)), (~padding).sum(dim=1) - 1] if padded else outputs[:, -1]
        last = self.output_dropout(last)
        return kernels.linear(last, self.head.weight, self.head.bias) if portable else self.head(last)


def build_model(config: ModelConfig, input_size: int, num_classes: int) -> SequenceClassifier:
    """A `SequenceClassifier` from the model section of a preset."""
    return SequenceClassifier(
        input_size=input_size,
        num_classes=num_classes,
        cell=str(config.cell.value),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        output_dropout=config.output_dropout,
    )


def save_arrays(model: SequenceClassifier) -> dict[str, np.ndarray]:
    """The model as named arrays (weights and constructor arguments), for a file whose bytes
    depend only on the weights (`reprolab.files.write_npz`)."""
    arrays = {f"weight.{name}": tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    arrays["init_args"] = np.array(json.dumps(model.init_args, sort_keys=True))
    return arrays


def load_file(path: Path | str) -> SequenceClassifier:
    """A model saved by the pipeline (`models/<preset>.npz`), in eval mode."""
    with np.load(path, allow_pickle=False) as saved:
        model = SequenceClassifier(**json.loads(str(saved["init_args"])))
        state = {
            name[len("weight.") :]: torch.from_numpy(saved[name]) for name in saved.files if name.startswith("weight.")
        }
    model.load_state_dict(state)
    return model.eval()
