"""The sequence classifier: a recurrent stack (RNN, LSTM or GRU) read at its last step."""

from __future__ import annotations

import torch
from torch import nn

from reprolab.config import ModelConfig

RECURRENT_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceClassifier(nn.Module):
    """Recurrent layers -> last-step output -> dropout -> linear head, giving class logits.

    `dropout` acts between recurrent layers (PyTorch's own `dropout` argument);
    `output_dropout` acts on the last step's hidden output before the head.
    """

    def __init__(self, input_size: int, num_classes: int, cell: str = "rnn", hidden_size: int = 32,
                 num_layers: int = 2, dropout: float = 0.0, output_dropout: float = 0.0):
        super().__init__()
        self.recurrent = RECURRENT_CELLS[cell](input_size, hidden_size, num_layers=num_layers,
                                               dropout=dropout, batch_first=True)
        self.output_dropout = nn.Dropout(output_dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_classes] for inputs [batch, steps, features]."""
        outputs, _ = self.recurrent(x)
        return self.head(self.output_dropout(outputs[:, -1]))


def build_model(config: ModelConfig, input_size: int, num_classes: int) -> SequenceClassifier:
    """A `SequenceClassifier` from the model section of a preset."""
    return SequenceClassifier(input_size=input_size, num_classes=num_classes, cell=config.cell,
                              hidden_size=config.hidden_size, num_layers=config.num_layers,
                              dropout=config.dropout, output_dropout=config.output_dropout)
