"""The text case study (Module 05): names as padded character sequences, language models with LayerNorm,
per-time-step BatchNorm or masked BatchNorm, and the measurements the module makes.

Data: the 1990 US census name lists that ship inside the ``names`` package (``dist.male.first``,
``dist.female.first``, ``dist.all.last``), nothing downloaded. A name is a sequence of letters; a language
model reads ``.NAME`` and predicts ``NAME.`` (``.`` marks both ends), one character per step. Batches are
right-padded with :data:`PAD` to a common length, with a boolean mask (True = a real token).

Models (torch, seeded):

* :class:`LayerNormLSTMCell`, the course's reference for the learners' graded cell: the LN-LSTM of Ba,
  Kiros & Hinton (2016, "Layer Normalization", arXiv:1607.06450, supplementary material, Eqs. 20-22):
  separate layer norms on W_x x and W_h h (each over the 4H gate pre-activations) and one on c_t before
  the output tanh;
* :class:`BNLSTMCell` with :class:`StepBatchNorm`, the BN-LSTM of Cooijmans et al. (2016, "Recurrent Batch
  Normalization", arXiv:1603.09025): batch norm on W_x x, W_h h and c_t with separate statistics for each
  time step, gamma initialized to 0.1, steps beyond the last trained one reusing its statistics;
* :class:`CharLM`: embedding, a recurrent layer (``torch.nn.LSTM``, or a loop over one of the cells above),
  a linear read-out; :class:`TinyTransformer`: a causal post-norm transformer (Vaswani et al. 2017) whose
  normalization is LayerNorm, BatchNorm over every position, or :class:`MaskedBatchNorm` over real tokens.

Measurements: masked cross-entropy per character, per position (:func:`position_losses`), statistics
recomputed once over the training set (:func:`recompute_step_statistics`), how far batch statistics stray
from the population's (:func:`batch_fluctuation`). References for the learners' NumPy masked batch norm are
:func:`reference_masked_batchnorm_forward` / ``_backward`` (on :func:`bnlib.masked_batch_norm_forward`); an
experiment uses a learner's code only after :func:`checked_masked_batchnorm` or :func:`checked_ln_cell`.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnlib

from .data import register
from .runtime import progress
from .train import History
from .verify import Disagreement, _compare, checked

VOCAB = "_." + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PAD, BOUNDARY = 0, 1          # "_" pads; "." starts and ends every name
CENSUS_FILES = {"first": ("dist.male.first", "dist.female.first"), "last": ("dist.all.last",)}


# ----------------------------------------------------------------------------- data
def census_names(which: str = "first") -> list[str]:
    """The census names shipped in the ``names`` package, upper case, unique, sorted: "first" (male and
    female lists together, 5,163 names of 2 to 11 letters) or "last" (88,799 names)."""
    import names as names_package
    if which not in CENSUS_FILES:
        raise ValueError(f"which must be 'first' or 'last', got {which!r}")
    folder = os.path.dirname(names_package.__file__)
    out = set()
    for file in CENSUS_FILES[which]:
        with open(os.path.join(folder, file), encoding="ascii") as fh:
            out.update(line.split()[0] for line in fh if line.strip())
    return sorted(w for w in out if w.isalpha())


@dataclass(frozen=True)
class Sequences:
    """Padded names: ``inputs`` (N, T) int64 ids of ``.NAME``, ``targets`` (N, T) of ``NAME.``, ``mask`` (N, T)
    bool (True for the len(name) + 1 real positions of each row, left-aligned)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)

    def batch(self, idx, length: int | None = None) -> "Sequences":
        """Rows ``idx`` cut to their longest sequence, or padded with PAD to ``length`` positions."""
        mask = self.mask[idx]
        t = int(mask.sum(1).max()) if length is None else length
        if t <= self.mask.shape[1]:
            return Sequences(self.inputs[idx, :t], self.targets[idx, :t], mask[:, :t])
        extra = t - self.mask.shape[1]
        pad = lambda a, v: F.pad(a, (0, extra), value=v)  # noqa: E731
        return Sequences(pad(self.inputs[idx], PAD), pad(self.targets[idx], PAD), pad(mask, False))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, length: int | None = None,
                drop_last: bool = True) -> list["Sequences"]:
        """Mini-batches (shuffled when ``generator`` is given), each cut to its longest name or padded to
        ``length``."""
        from .data import batches as index_batches
        return [self.batch(i, length) for i in index_batches(self.inputs, batch_size, generator, drop_last)]


def encode(words, length: int | None = None) -> Sequences:
    """Names (upper-case letters) as :class:`Sequences` padded to the longest (or to ``length``)."""
    t = max(len(w) for w in words) + 1 if length is None else length
    inputs = torch.full((len(words), t), PAD, dtype=torch.int64)
    targets = torch.full((len(words), t), PAD, dtype=torch.int64)
    for i, w in enumerate(words):
        ids = [VOCAB.index(ch) for ch in w]
        inputs[i, :len(w) + 1] = torch.tensor([BOUNDARY] + ids)
        targets[i, :len(w) + 1] = torch.tensor(ids + [BOUNDARY])
    return Sequences(inputs, targets, inputs != PAD)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids if int(i) != PAD)


@dataclass(frozen=True)
class Corpus:
    """A train/validation split of names, encoded (``train``, ``val``) and as strings."""

    train: Sequences
    val: Sequences
    words_train: tuple
    words_val: tuple

    def __repr__(self) -> str:
        lengths = self.train.lengths.float()
        return (f"Corpus({len(self.train)} training and {len(self.val)} validation names, {len(VOCAB)} symbols, "
                f"{int(lengths.min())}-{int(lengths.max())} positions per name, mean {float(lengths.mean()):.1f})")


@register("names")
def names_corpus(which: str = "first", val_fraction: float = 0.1, limit: int | None = None, seed: int = 0) -> Corpus:
    """The census names (:func:`census_names`), shuffled with ``seed`` (a ``limit`` keeps that many) and
    split into training and validation names."""
    words = census_names(which)
    order = torch.randperm(len(words), generator=torch.Generator().manual_seed(seed)).tolist()
    words = [words[i] for i in order[:limit]]
    n_val = int(round(len(words) * val_fraction))
    val, train = tuple(words[:n_val]), tuple(words[n_val:])
    return Corpus(encode(train), encode(val), train, val)


# ----------------------------------------------------------------------------- recurrent cells
def _init_uniform(p: torch.Tensor, hidden_size: int) -> None:
    k = 1.0 / math.sqrt(hidden_size)
    with torch.no_grad():
        p.uniform_(-k, k)


class LayerNormLSTMCell(nn.Module):
    """LN-LSTM cell (Ba et al. 2016, supplementary material, Eqs. 20-22), the course's reference.

        (i, f, g, o) = LN(W_x x; gamma_ih, beta_ih) + LN(W_h h; gamma_hh, beta_hh) + bias
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(LN(c'; gamma_c, beta_c))

    Each LN normalizes over the last axis (the 4H gate pre-activations, or the H cell values) with the
    biased variance and eps = 1e-5 inside the square root. Parameters (the graded contract): weight_ih
    (4H, input_size), weight_hh (4H, H), bias (4H,), gamma_ih, beta_ih, gamma_hh, beta_hh (4H,), gamma_c,
    beta_c (H,); the gates are stacked (i, f, g, o) as in ``torch.nn.LSTMCell``. gammas start at 1, betas and
    bias at 0, weights uniform in +-1/sqrt(H). ``forward(x, (h, c)) -> (h', c')``, x (N, input_size).
    """

    def __init__(self, input_size: int, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        h4 = 4 * hidden_size
        self.input_size, self.hidden_size, self.eps = input_size, hidden_size, eps
        self.weight_ih = nn.Parameter(torch.empty(h4, input_size))
        self.weight_hh = nn.Parameter(torch.empty(h4, hidden_size))
        self.bias = nn.Parameter(torch.zeros(h4))
        self.gamma_ih, self.beta_ih = nn.Parameter(torch.ones(h4)), nn.Parameter(torch.zeros(h4))
        self.gamma_hh, self.beta_hh = nn.Parameter(torch.ones(h4)), nn.Parameter(torch.zeros(h4))
        self.gamma_c, self.beta_c = nn.Parameter(torch.ones(hidden_size)), nn.Parameter(torch.zeros(hidden_size))
        _init_uniform(self.weight_ih, hidden_size)
        _init_uniform(self.weight_hh, hidden_size)

    def forward(self, x, state):
        h, c = state
        ln = lambda z, g, b: F.layer_norm(z, z.shape[-1:], g, b, self.eps)  # noqa: E731
        gates = (ln(x @ self.weight_ih.T, self.gamma_ih, self.beta_ih)
                 + ln(h @ self.weight_hh.T, self.gamma_hh, self.beta_hh) + self.bias)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(ln(c, self.gamma_c, self.beta_c))
        return h, c


class StepBatchNorm(nn.Module):
    """Batch norm with separate statistics for each time step (Cooijmans et al. 2016, Section 3): step t
    uses running statistics ``t`` for t < ``max_steps`` and those of the last step beyond it.

    In training mode the statistics of step t are those of the batch's REAL tokens at t (``mask``): the
    sequences still running. With one real token the normalized value is 0; with none the step is skipped.
    Running statistics are updated (PyTorch's conventions) when at least 2 tokens are real. gamma starts at
    ``gamma_init`` (0.1 in Cooijmans et al., Section 4, to keep the gates' inputs in tanh's linear range).
    """

    def __init__(self, features: int, max_steps: int, gamma_init: float = 0.1, affine_bias: bool = True,
                 momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.max_steps, self.momentum, self.eps = max_steps, momentum, eps
        self.weight = nn.Parameter(torch.full((features,), float(gamma_init)))
        self.bias = nn.Parameter(torch.zeros(features)) if affine_bias else None
        self.register_buffer("running_mean", torch.zeros(max_steps, features))
        self.register_buffer("running_var", torch.ones(max_steps, features))

    def forward(self, z, t: int, mask=None):
        s = min(t, self.max_steps - 1)
        if self.training:
            m = z.shape[0] if mask is None else int(mask.sum())
            if m == 0:
                return torch.zeros_like(z)
            if m == z.shape[0]:
                mean, var = z.mean(0), z.var(0, unbiased=False)
            else:          # weighted sums over the real rows (cheaper than gathering them)
                w = mask.unsqueeze(1).to(z.dtype)
                mean = (z * w).sum(0) / m
                var = (((z - mean) * w) ** 2).sum(0) / m
            if m >= 2 and self.momentum:
                with torch.no_grad():
                    self.running_mean[s].lerp_(mean.detach(), self.momentum)
                    self.running_var[s].lerp_(var.detach() * m / (m - 1), self.momentum)
        else:
            mean, var = self.running_mean[s], self.running_var[s]
        out = (z - mean) / torch.sqrt(var + self.eps) * self.weight
        return out if self.bias is None else out + self.bias


class BNLSTMCell(nn.Module):
    """BN-LSTM cell (Cooijmans et al. 2016, Eqs. 6-8): BN(W_h h) + BN(W_x x) + bias (those two without beta),
    c' as in the LSTM, h' = sigmoid(o) * tanh(BN(c')), each BN a :class:`StepBatchNorm` (gamma 0.1).
    ``forward(x, (h, c), t, mask) -> (h', c')`` with the step index t and the (N,) mask of real tokens."""

    def __init__(self, input_size: int, hidden_size: int, max_steps: int, gamma_init: float = 0.1):
        super().__init__()
        h4 = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(h4, input_size))
        self.weight_hh = nn.Parameter(torch.empty(h4, hidden_size))
        self.bias = nn.Parameter(torch.zeros(h4))
        _init_uniform(self.weight_ih, hidden_size)
        _init_uniform(self.weight_hh, hidden_size)
        self.bn_ih = StepBatchNorm(h4, max_steps, gamma_init, affine_bias=False)
        self.bn_hh = StepBatchNorm(h4, max_steps, gamma_init, affine_bias=False)
        self.bn_c = StepBatchNorm(hidden_size, max_steps, gamma_init)

    def forward(self, x, state, t: int, mask=None):
        h, c = state
        gates = self.bn_hh(h @ self.weight_hh.T, t, mask) + self.bn_ih(x @ self.weight_ih.T, t, mask) + self.bias
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.bn_c(c, t, mask))
        return h, c


def step_norms(model: nn.Module) -> list[StepBatchNorm]:
    return [m for m in model.modules() if isinstance(m, StepBatchNorm)]


# ----------------------------------------------------------------------------- language models
class CharLM(nn.Module):
    """Character language model: embedding (``embed`` dims), one recurrent layer of ``hidden`` units, a linear
    read-out to the symbols. ``kind``: "lstm" (``torch.nn.LSTM``), "ln" (a loop over ``cell(embed, hidden)``,
    :class:`LayerNormLSTMCell` by default, e.g. the learner's) or "bn" (a loop over :class:`BNLSTMCell` with
    ``max_steps`` per-step statistics). ``forward(inputs, mask) -> logits`` (N, T, len(VOCAB))."""

    def __init__(self, kind: str = "lstm", cell: Callable[..., nn.Module] | None = None, embed: int = 16,
                 hidden: int = 64, max_steps: int = 12, seed: int = 0):
        super().__init__()
        if kind not in ("lstm", "ln", "bn"):
            raise ValueError(f"kind must be 'lstm', 'ln' or 'bn', got {kind!r}")
        torch.manual_seed(seed)
        self.kind, self.hidden = kind, hidden
        self.embed = nn.Embedding(len(VOCAB), embed, padding_idx=PAD)
        if kind == "lstm":
            self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        elif kind == "ln":
            self.cell = (cell or LayerNormLSTMCell)(embed, hidden)
        else:
            self.cell = BNLSTMCell(embed, hidden, max_steps)
        self.head = nn.Linear(hidden, len(VOCAB))

    def forward(self, inputs, mask=None):
        e = self.embed(inputs)
        if self.kind == "lstm":
            out, _ = self.rnn(e)
            return self.head(out)
        n = inputs.shape[0]
        h = c = e.new_zeros(n, self.hidden)
        outs = []
        for t in range(inputs.shape[1]):
            if self.kind == "bn":
                h, c = self.cell(e[:, t], (h, c), t, None if mask is None else mask[:, t])
            else:
                h, c = self.cell(e[:, t], (h, c))
            outs.append(h)
        return self.head(torch.stack(outs, 1))


def masked_cross_entropy(logits, targets, mask) -> torch.Tensor:
    """Mean cross-entropy (nats per character) over the real tokens."""
    return F.cross_entropy(logits[mask], targets[mask])


def fit_lm(model: nn.Module, data: Sequences, *, epochs: int = 4, lr: float = 3e-3, batch_size: int = 64,
           seed: int = 0, length: int | None = None, show_progress: bool = False, desc: str = "training") -> History:
    """Train a language model (``model(inputs, mask) -> logits``) with Adam on shuffled batches cut to their
    longest name (or padded to ``length``); the loss of every step (nats per character) in a History."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    hist = History()
    epochs_iter = progress(range(epochs), desc=desc, leave=False) if show_progress else range(epochs)
    for _ in epochs_iter:
        for b in data.batches(batch_size, gen, length):
            loss = masked_cross_entropy(model(b.inputs, b.mask), b.targets, b.mask)
            value = float(loss.detach())
            hist.losses.append(value)
            if not math.isfinite(value):
                hist.diverged = True
                return hist
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return hist


def _scoring_copy(model: nn.Module, statistics: str) -> nn.Module:
    if statistics not in ("running", "batch"):
        raise ValueError(f"statistics must be 'running' or 'batch', got {statistics!r}")
    work = copy.deepcopy(model).eval()
    if statistics == "batch":
        for m in work.modules():
            if isinstance(m, BATCH_NORMS):
                m.train()
    return work


@torch.no_grad()
def position_losses(model: nn.Module, data: Sequences, statistics: str = "running", batch_size: int = 64,
                    length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy summed per position t (nats) and the number of real tokens at t, over ``data`` in
    batches of ``batch_size`` names (padded to ``length``, or cut to their longest). ``statistics``:
    "running" (eval mode: BN uses its running statistics) or "batch" (BN layers normalize each batch with
    its own statistics, on a copy whose running statistics are thrown away; everything else in eval mode).
    Loss per character = sums.sum() / counts.sum() (:func:`loss_per_character`)."""
    work = _scoring_copy(model, statistics)
    sums, counts = None, None
    for b in data.batches(batch_size, None, length, drop_last=False):
        logits = work(b.inputs, b.mask)
        ce = F.cross_entropy(logits.transpose(1, 2), b.targets, reduction="none") * b.mask
        s, c = ce.sum(0).double().numpy(), b.mask.sum(0).double().numpy()
        if sums is None:
            sums, counts = s, c
        else:
            n = max(len(sums), len(s))
            sums, counts = (np.pad(sums, (0, n - len(sums))) + np.pad(s, (0, n - len(s))),
                            np.pad(counts, (0, n - len(counts))) + np.pad(c, (0, n - len(c))))
    return sums, counts


@torch.no_grad()
def sequence_losses(model: nn.Module, data: Sequences, statistics: str = "running") -> np.ndarray:
    """The loss (nats per character) of each sequence of ``data``, all scored together as ONE batch
    (``statistics`` as in :func:`position_losses`)."""
    work = _scoring_copy(model, statistics)
    logits = work(data.inputs, data.mask)
    ce = F.cross_entropy(logits.transpose(1, 2), data.targets, reduction="none") * data.mask
    return (ce.sum(1) / data.mask.sum(1)).double().numpy()


def loss_per_character(sums_counts) -> float:
    sums, counts = sums_counts
    return float(sums.sum() / counts.sum())


@torch.no_grad()
def recompute_step_statistics(model: nn.Module, data: Sequences) -> nn.Module:
    """Set every :class:`StepBatchNorm`'s running statistics to the statistics of ALL the real tokens of
    ``data`` at each step, with the final weights (a PreciseBN-style re-estimation, Wu & Johnson 2021,
    arXiv:2105.07576): one training-mode pass over ``data`` as a single batch with momentum 1, so that each
    step's statistics are computed from inputs that earlier steps normalized with theirs. In place; modes
    and momenta are restored."""
    norms = step_norms(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [n.momentum for n in norms]
    model.eval()
    for n in norms:
        n.train()
        n.momentum = 1.0
    try:
        model(data.inputs, data.mask)
    finally:
        for n, mom in zip(norms, momenta):
            n.momentum = mom
        for m, mode in modes.items():
            m.training = mode
    return model


# ----------------------------------------------------------------------------- masked batch norm
class MaskedBatchNorm(nn.Module):
    """Batch norm over the real tokens of (N, T, D) inputs (torch autograd; the statistics of
    :func:`bnlib.masked_batch_norm_forward`): ``forward(x, mask)``; padded outputs are 0. With
    ``use_mask=False`` every position counts, padding included (plain BN over the N*T positions, the
    mistake the module measures)."""

    def __init__(self, features: int, use_mask: bool = True, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.use_mask, self.momentum, self.eps = use_mask, momentum, eps
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x, mask):
        keep = mask if self.use_mask else torch.ones_like(mask)
        y = F.batch_norm(x[keep], self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return x.new_zeros(x.shape).index_put((keep,), y) if self.use_mask else y.reshape(x.shape)


def reference_masked_batchnorm_forward(x, mask, gamma, beta, running_mean, running_var, training, momentum=0.1,
                                       eps=1e-5):
    """The learners' contract, on :func:`bnlib.masked_batch_norm_forward`: (out, cache)."""
    return bnlib.masked_batch_norm_forward(x, mask, weight=gamma, bias=beta, running_mean=running_mean,
                                           running_var=running_var, training=training, momentum=momentum, eps=eps)


def reference_masked_batchnorm_backward(dout, cache):
    """The learners' contract, on :func:`bnlib.masked_batch_norm_backward`: (dx, dgamma, dbeta)."""
    return tuple(bnlib.masked_batch_norm_backward(dout, cache))


class _NumpyMaskedBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mask, layer):
        out, cache = layer.forward_fn(x.detach().numpy(), mask.numpy(), weight.detach().numpy(),
                                      bias.detach().numpy(), layer.running_mean.numpy(), layer.running_var.numpy(),
                                      layer.training, layer.momentum, layer.eps)
        ctx.cache, ctx.layer = cache, layer
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    @staticmethod
    def backward(ctx, dy):
        dx, dg, db = ctx.layer.backward_fn(dy.detach().numpy().astype(np.float32), ctx.cache)
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        return as_t(dx), as_t(dg), as_t(db), None, None


class NumpyMaskedBatchNorm(nn.Module):
    """A torch layer that runs NumPy masked batch norm functions with the learners' contract
    (``forward_fn(x, mask, gamma, beta, running_mean, running_var, training, momentum, eps) -> (out,
    cache)``, ``backward_fn(dout, cache) -> (dx, dgamma, dbeta)``) on float32 CPU tensors, so that the
    learner's own functions can train a network. The running statistics are float32 buffers updated in place
    by ``forward_fn``. ``use_mask=False`` passes an all-True mask (padding counted in the statistics)."""

    def __init__(self, features: int, forward_fn=reference_masked_batchnorm_forward,
                 backward_fn=reference_masked_batchnorm_backward, use_mask: bool = True, momentum: float = 0.1,
                 eps: float = 1e-5):
        super().__init__()
        self.forward_fn, self.backward_fn = forward_fn, backward_fn
        self.use_mask, self.momentum, self.eps = use_mask, momentum, eps
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x, mask):
        keep = mask if self.use_mask else torch.ones_like(mask)
        return _NumpyMaskedBN.apply(x.float().contiguous(), self.weight, self.bias, keep, self)


class PaddedBNLM(nn.Module):
    """Embedding, ``norm`` (a layer called as ``norm(x, mask)``, e.g. :class:`NumpyMaskedBatchNorm`),
    ``torch.nn.LSTM``, linear read-out: BN on the LSTM's inputs (where Laurent et al. 2016 found it helps
    most). ``forward(inputs, mask) -> logits``."""

    def __init__(self, norm: nn.Module, embed: int = 16, hidden: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(len(VOCAB), embed, padding_idx=PAD)
        self.norm = norm
        self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, len(VOCAB))

    def forward(self, inputs, mask):
        out, _ = self.rnn(self.norm(self.embed(inputs), mask))
        return self.head(out)


#: the layers with batch statistics that :func:`position_losses` switches to training mode for "batch"
BATCH_NORMS = (StepBatchNorm, MaskedBatchNorm, NumpyMaskedBatchNorm, nn.modules.batchnorm._BatchNorm)


# ----------------------------------------------------------------------------- transformer
class TokenNorm(nn.Module):
    """The normalization of a transformer's tokens (N, T, D): "ln" (``torch.nn.LayerNorm``, per token), "bn"
    (batch norm over all N*T positions, padding included) or "masked_bn" (:class:`MaskedBatchNorm`)."""

    def __init__(self, kind: str, d: int):
        super().__init__()
        if kind not in ("ln", "bn", "masked_bn"):
            raise ValueError(f"kind must be 'ln', 'bn' or 'masked_bn', got {kind!r}")
        self.kind = kind
        self.norm = nn.LayerNorm(d) if kind == "ln" else MaskedBatchNorm(d, use_mask=kind == "masked_bn")

    def forward(self, x, mask):
        return self.norm(x) if self.kind == "ln" else self.norm(x, mask)


class TinyTransformer(nn.Module):
    """A causal transformer language model in the post-norm arrangement of Vaswani et al. (2017, Section
    3.1: Norm(x + Sublayer(x))): token and position embeddings of ``d`` dims, ``layers`` blocks of causal
    self-attention (``heads`` heads) and a ReLU feed-forward layer of 4d, each followed by :class:`TokenNorm`
    of ``norm``. ``forward(inputs, mask) -> logits``."""

    def __init__(self, norm: str = "ln", d: int = 64, heads: int = 4, layers: int = 2, max_len: int = 16,
                 seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.tok = nn.Embedding(len(VOCAB), d, padding_idx=PAD)
        self.pos = nn.Embedding(max_len, d)
        self.attn = nn.ModuleList(nn.MultiheadAttention(d, heads, batch_first=True) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))
                                 for _ in range(layers))
        self.norm1 = nn.ModuleList(TokenNorm(norm, d) for _ in range(layers))
        self.norm2 = nn.ModuleList(TokenNorm(norm, d) for _ in range(layers))
        self.head = nn.Linear(d, len(VOCAB))

    def forward(self, inputs, mask):
        t = inputs.shape[1]
        x = self.tok(inputs) + self.pos(torch.arange(t))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        for attn, ffn, n1, n2 in zip(self.attn, self.ffn, self.norm1, self.norm2):
            x = n1(x + attn(x, x, x, attn_mask=causal, need_weights=False)[0], mask)
            x = n2(x + ffn(x), mask)
        return self.head(x)


# ----------------------------------------------------------------------------- batch statistics
def batch_fluctuation(features: list[torch.Tensor]) -> dict:
    """How far batch statistics stray from the population's (after Shen et al. 2020, "PowerNorm", Section
    3). ``features``: one (m_b, C) tensor per batch (the values each BN channel sees in that batch: real
    tokens, or images' pixel positions). Population mean and variance per channel are those of all batches
    together. Per batch: the median over channels of |mean_B - mean| / std (``mean``) and of
    |var_B / var - 1| (``var``). Returns arrays over batches and the values per channel ``m``."""
    allf = torch.cat(features).double()
    mu, var = allf.mean(0), allf.var(0, unbiased=False)
    alive = var > 1e-12 * var.max()
    d_mean, d_var, m = [], [], []
    for f in features:
        f = f.double()
        d_mean.append(float(((f.mean(0) - mu).abs() / var.sqrt())[alive].median()))
        d_var.append(float((f.var(0, unbiased=False) / var - 1).abs()[alive].median()))
        m.append(len(f))
    return {"mean": np.array(d_mean), "var": np.array(d_var), "m": np.array(m)}


# ----------------------------------------------------------------------------- checking learners' code
def probe_masked_batchnorm(fns, seed: int = 0) -> None:
    """The learner's (forward, backward) against bnlib on a small ragged float64 batch: training output,
    running statistics, the three gradients, and the eval-mode output."""
    forward, backward = fns
    rng = np.random.default_rng(seed)
    lengths = np.array([5, 2, 4, 1])
    mask = np.arange(5)[None, :] < lengths[:, None]
    x = rng.normal(6, 3, (4, 5, 3))
    x[~mask] = 50.0
    g, b = rng.normal(1, 0.3, 3), rng.normal(0, 1, 3)
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    rm_l, rv_l, rm_r, rv_r = rm.copy(), rv.copy(), rm.copy(), rv.copy()
    res = forward(x.copy(), mask.copy(), g.copy(), b.copy(), rm_l, rv_l, True, 0.1, 1e-5)
    if type(res) is not tuple or len(res) != 2:
        raise Disagreement("masked_batchnorm_forward must return (out, cache)")
    out, cache = res
    ref, saved = reference_masked_batchnorm_forward(x, mask, g, b, rm_r, rv_r, True, 0.1, 1e-5)
    _compare("the training-mode output", out, ref, 1e-8)
    _compare("running_mean", rm_l, rm_r, 1e-8)
    _compare("running_var", rv_l, rv_r, 1e-8)
    dy = rng.normal(size=x.shape)
    grads = backward(dy.copy(), cache)
    if type(grads) is not tuple or len(grads) != 3:
        raise Disagreement("masked_batchnorm_backward must return (dx, dgamma, dbeta)")
    for name, got, exp in zip(("dx", "dgamma", "dbeta"), grads, reference_masked_batchnorm_backward(dy, saved)):
        _compare(name, got, exp, 1e-7)
    out, _ = forward(x.copy(), mask.copy(), g, b, rm.copy(), rv.copy(), False, 0.1, 1e-5)
    _compare("the eval-mode output", out, reference_masked_batchnorm_forward(x, mask, g, b, rm.copy(), rv.copy(),
                                                                                False)[0], 1e-8)


def checked_masked_batchnorm(forward, backward):
    """(forward, backward): the learner's if they pass :func:`probe_masked_batchnorm`, else the references
    (one printed line says which)."""
    ref = (reference_masked_batchnorm_forward, reference_masked_batchnorm_backward)
    passed = []

    def probe(f):
        probe_masked_batchnorm((f, backward))
        passed.append(True)
    checked(None if backward is None else forward, reference_masked_batchnorm_forward, probe,
            "masked_batchnorm_forward and _backward")
    return (forward, backward) if passed else ref


def probe_ln_cell(Cell, seed: int = 0) -> None:
    """The learner's LayerNormLSTMCell against :class:`LayerNormLSTMCell` with the same random parameters:
    three steps of h and c, and the gradients of every parameter."""
    gen = torch.Generator().manual_seed(seed)
    mine, ref = Cell(3, 4), LayerNormLSTMCell(3, 4)
    if not isinstance(mine, nn.Module):
        raise Disagreement("LayerNormLSTMCell(input_size, hidden_size) is not a torch.nn.Module")
    mine, ref = mine.double(), ref.double()
    names = [n for n, _ in ref.named_parameters()]
    params = dict(mine.named_parameters())
    if sorted(params) != sorted(names):
        raise Disagreement(f"its parameters are {sorted(params)}, expected {sorted(names)}")
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5 + (1 if n.startswith("gamma") else 0))
            params[n].copy_(p)
    xs = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    outs = []
    for cell in (mine, ref):
        h = c = torch.zeros(2, 4, dtype=torch.float64)
        for x in xs:
            h, c = cell(x, (h, c))
        (h.sum() + (c * c).sum()).backward()
        outs.append((h.detach(), c.detach(), {n: p.grad for n, p in cell.named_parameters()}))
    _compare("h after 3 steps", outs[0][0], outs[1][0], 1e-8)
    _compare("c after 3 steps", outs[0][1], outs[1][1], 1e-8)
    for n in names:
        if outs[0][2][n] is None:
            raise Disagreement(f"{n} gets no gradient")
        _compare(f"the gradient of {n}", outs[0][2][n], outs[1][2][n], 1e-7)


def checked_ln_cell(Cell):
    """The learner's ``LayerNormLSTMCell`` if it passes :func:`probe_ln_cell`, else :class:`LayerNormLSTMCell`."""
    return checked(Cell, LayerNormLSTMCell, probe_ln_cell, "LayerNormLSTMCell")
