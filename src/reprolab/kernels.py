"""The portable mode's arithmetic: a recurrent stack and its head computed without MKL.

torch's CPU wheel sends float32 matrix products and its tanh, exp, log and sqrt to MKL, whose
results were seen to differ between an AMD EPYC and an Intel Xeon on the same branch (and move
with `MKL_CBWR` on one machine). Here, instead:

- matrix products go to SciPy's OpenBLAS (`sgemm`), whose kernels `reprolab.numerics` pins to
  one set (`OPENBLAS_CORETYPE=Haswell`, one thread) before it loads: the same instructions on
  every x86-64-v3 CPU, and OpenBLAS blocks the products by constants of that set, not by the
  machine's caches. (SciPy's, not NumPy's: NumPy's OpenBLAS has picked its kernels as NumPy was
  imported, often before any reprolab code ran, as in a Dask worker.)
- tanh is `expm1(2x) / (expm1(2x) + 2)`: torch computes expm1 and sigmoid itself (its AVX2
  kernels, `ATEN_CPU_CAPABILITY=avx2`), never through MKL;
- the rest (sums, element-wise products, sigmoid, log-softmax) is torch's own code at that level.

The layers are PyTorch's (`nn.RNN`, `nn.LSTM`, `nn.GRU` equations, gate order and parameters),
run one step at a time, so a model trained either way loads and runs the other way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _blas_operand(x: np.ndarray) -> tuple[np.ndarray, int]:
    """`x` as a column-major BLAS operand of `x.T`: (array, transpose flag), no copy where `x` is
    contiguous either way."""
    return (x, 1) if x.flags.f_contiguous and not x.flags.c_contiguous else (x.T, 0)


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as (b.T @ a.T).T by SciPy's sgemm: BLAS is column-major, so a row-major array's
    transpose is its operand as it lies in memory."""
    from scipy.linalg.blas import sgemm  # its OpenBLAS loads here, with the kernels numerics set

    (x, trans_x), (y, trans_y) = _blas_operand(b.detach().numpy()), _blas_operand(a.detach().numpy())
    return torch.from_numpy(sgemm(1.0, x, y, trans_a=trans_x, trans_b=trans_y).T)


class _MatMul(torch.autograd.Function):
    """a @ b for 2-D float32 tensors, forward and backward through SciPy's BLAS (`_product`)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return _product(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b = ctx.saved_tensors
        grad_a = _product(grad, b.T) if ctx.needs_input_grad[0] else None
        grad_b = _product(a.T, grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class _Tanh(torch.autograd.Function):
    """tanh from expm1 (exact near 0; saturated beyond |x| = 9, where float32's tanh is 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        e = torch.expm1(2 * x.clamp(-9.0, 9.0))
        y = e / (e + 2)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


tanh = _Tanh.apply


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` over the last dimension of `x`."""
    out = _MatMul.apply(x.reshape(-1, x.shape[-1]), weight.T).reshape(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias


def _step(cell: str, inputs: torch.Tensor, h, w_hh: torch.Tensor, b_hh: torch.Tensor):
    """One step of one layer: `inputs` is x_t's projection (W_ih x_t + b_ih); (h, c) for an LSTM."""
    if cell == "rnn":
        return tanh(inputs + (b_hh if h is None else linear(h, w_hh, b_hh)))
    hidden = None if h is None else (h[0] if cell == "lstm" else h)
    recurrent = b_hh.expand_as(inputs) if hidden is None else linear(hidden, w_hh, b_hh)
    if cell == "lstm":
        i, f, g, o = (inputs + recurrent).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), tanh(g), torch.sigmoid(o)
        c = i * g if h is None else f * h[1] + i * g
        return o * tanh(c), c
    x_r, x_z, x_n = inputs.chunk(3, dim=1)
    h_r, h_z, h_n = recurrent.chunk(3, dim=1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = tanh(x_n + r * h_n)
    return (1 - z) * n if hidden is None else (1 - z) * n + z * hidden


def recurrent(layers: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """The outputs [batch, steps, hidden] of `layers` (batch first, zero initial state) for
    inputs [batch, steps, features], as `layers(x)[0]` computes them."""
    cell = {"RNN_TANH": "rnn", "LSTM": "lstm", "GRU": "gru"}[layers.mode]
    for layer in range(layers.num_layers):
        if layer and layers.dropout:
            x = F.dropout(x, layers.dropout, layers.training)
        weights = [getattr(layers, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        projected = linear(x, weights[0], weights[2])
        state, outputs = None, []
        for t in range(x.shape[1]):
            state = _step(cell, projected[:, t], state, weights[1], weights[3])
            outputs.append(state[0] if cell == "lstm" else state)
        x = torch.stack(outputs, dim=1)
    return x
