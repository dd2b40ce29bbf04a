r"""A neural decoder that re-ranks from the same codes (QINCo-style, numpy at search time).

The codec's linear decoder ``x_lin = mu + sum_m B_m[c_m]`` is what ADC scores exactly, so it
stays the search's shortlist. This decoder is only used to re-order that shortlist: it
predicts the embedding from the codes better than their sum by conditioning on all of them
at once (QINCo, Huijben et al. 2024, and QINCo2, Vallaeys et al. 2025, condition each stage's
codeword on the partial reconstruction; here one network sees the linear reconstruction and
a learned embedding of every stage's code, which costs one small MLP per candidate instead of
M of them):

.. math::

    h_0 = W_{in} x_{lin} + b_{in} + \sum_m E[m, c_m], \qquad
    h_{l+1} = h_l + W_2^l\,\mathrm{gelu}(W_1^l\,\mathrm{LN}(h_l) + b_1^l) + b_2^l,

    \hat x = x_{lin} + W_{out}\,\mathrm{gelu}(\mathrm{LN}(h_L)) + b_{out}.

``W_out`` starts at zero, so training starts from the linear decoder exactly and early
stopping on held-out vectors (never the training ones) can only keep a decoder that beats it
there. Codes are never changed: the stored data, the ADC scores and the shortlist are the
same with or without this decoder.

Training runs in torch (imported only then); decoding runs in numpy with the same weights,
so a search never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Names of the decoder's tensors inside a codec file (prefixed with ``neural.``).
NEURAL_PREFIX = "neural."
#: Fewest vectors a decoder is trained on (a codec fitted on fewer gets none).
MIN_TRAIN_VECTORS = 20
_LN_EPS = 1e-5


@dataclass(frozen=True)
class NeuralDecoderConfig:
    """Size and training of the neural re-rank decoder.

    ``hidden`` is the width of the residual MLP, ``blocks`` its depth. Training minimises the
    squared error of the reconstruction with AdamW on mini-batches; ``holdout`` of the
    vectors are kept out of training and decide when to stop (``patience`` epochs without a
    better held-out error) and which epoch's weights are kept.
    """

    hidden: int = 256
    blocks: int = 1
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    code_dropout: float = 0.0
    patience: int = 5
    holdout: float = 0.1
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.blocks < 0 or self.epochs < 0 or self.batch_size < 1:
            raise ValueError("hidden and batch_size must be >= 1, blocks and epochs >= 0")
        if not 0.0 < self.holdout < 0.5:
            raise ValueError(f"holdout must be in (0, 0.5), got {self.holdout!r}")
        if self.patience < 1 or self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("patience must be >= 1, learning_rate > 0, weight_decay >= 0")
        if not 0.0 <= self.code_dropout < 1.0:
            raise ValueError(f"code_dropout must be in [0, 1), got {self.code_dropout!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NeuralDecoderConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class NeuralFitReport:
    """What training the neural decoder saw: held-out relative errors before and after."""

    train_vectors: int
    held_out_vectors: int
    epochs_run: int
    best_epoch: int  # 0: no epoch beat the linear decoder on the held-out vectors
    seconds: float
    linear_held_out_error: float
    held_out_error: float
    held_out_history: list[float] = field(default_factory=list)

    def summary(self) -> str:
        gain = 1.0 - self.held_out_error / max(self.linear_held_out_error, 1e-12)
        return (
            f"neural decoder: held-out relative error {self.linear_held_out_error:.4f} (linear) -> "
            f"{self.held_out_error:.4f} ({gain:.1%} lower), best epoch {self.best_epoch}/{self.epochs_run}, "
            f"{self.train_vectors} train / {self.held_out_vectors} held-out vectors, {self.seconds:.1f} s"
        )


def _gelu(x: np.ndarray) -> np.ndarray:
    # tanh form: the same function torch trains with (approximate="tanh")
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=1, keepdims=True)
    scale = 1.0 / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + _LN_EPS)
    return centred * scale * gain + bias


class NeuralDecoder:
    """Refines linear reconstructions from their codes; weights are float32 numpy arrays.

    Build it with :func:`fit_neural_decoder` or :meth:`from_tensors`; :meth:`refine` maps
    ``(codes, linear reconstructions)`` to better reconstructions.
    """

    def __init__(self, params: dict[str, np.ndarray], config: NeuralDecoderConfig) -> None:
        self.config = config
        self.params = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in params.items()}
        self._check()
        self._hash: str | None = None
        self._folded: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_subvectors(self) -> int:
        return int(self.params["code_embedding"].shape[0])

    @property
    def codebook_size(self) -> int:
        return int(self.params["code_embedding"].shape[1])

    @property
    def dim(self) -> int:
        return int(self.params["w_in"].shape[0])

    @property
    def flops_per_vector(self) -> int:
        """Multiply-adds of :meth:`refine` for one vector (the re-rank cost per candidate)."""
        hidden, dim = self.config.hidden, self.dim
        first = self.num_subvectors * hidden if self._folded is not None else dim * hidden
        return first + self.config.blocks * 2 * hidden * hidden + hidden * dim

    @property
    def content_hash(self) -> str:
        """SHA-256 of this decoder's config and weights."""
        if self._hash is None:
            digest = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
            for name in sorted(self.params):
                digest.update(name.encode())
                digest.update(self.params[name].tobytes())
            self._hash = digest.hexdigest()
        return self._hash

    def bind(self, decoder_books: np.ndarray, mean: np.ndarray) -> None:
        """Fold the input layer into per-stage tables, given the linear decoder it refines.

        ``W_in x_lin = W_in mu + sum_m W_in B_m[c_m]``, so with ``decoder_books`` (M, K, dim)
        = ``B`` and ``mean`` = ``mu`` the first layer becomes M table look-ups per vector
        instead of a (dim x hidden) product: the same function, a third of the re-rank cost.
        """
        p = self.params
        tables = p["code_embedding"] + np.einsum("mkd,dh->mkh", decoder_books, p["w_in"], optimize=True)
        self._folded = (np.ascontiguousarray(tables, dtype=np.float32), (mean @ p["w_in"] + p["b_in"]).astype(np.float32))

    def refine(self, codes: np.ndarray, linear: np.ndarray) -> np.ndarray:
        """Reconstructions (n, dim) of ``codes`` (n, M) ints, given their linear ones (n, dim)
        (as ``mu + sum_m B_m[c_m]`` of the books given to :meth:`bind`, when it was called)."""
        p = self.params
        linear = np.asarray(linear, dtype=np.float32)
        folded = self._folded
        if folded is None:
            hidden = linear @ p["w_in"] + p["b_in"]
            table = p["code_embedding"]
        else:
            table, offset = folded
            hidden = np.broadcast_to(offset, (len(linear), offset.shape[0])).copy()
        for m in range(codes.shape[1]):
            hidden += table[m][codes[:, m]]
        for block in range(self.config.blocks):
            inner = _gelu(_layer_norm(hidden, p[f"ln{block}_g"], p[f"ln{block}_b"]) @ p[f"w1_{block}"] + p[f"b1_{block}"])
            hidden += inner @ p[f"w2_{block}"] + p[f"b2_{block}"]
        out = _gelu(_layer_norm(hidden, p["ln_out_g"], p["ln_out_b"])) @ p["w_out"] + p["b_out"]
        return linear + out

    # -- persistence ---------------------------------------------------------------------
    def to_tensors(self) -> dict[str, np.ndarray]:
        """The weights, named ``neural.<name>``, for the codec's safetensors file."""
        return {NEURAL_PREFIX + name: value for name, value in self.params.items()}

    def config_json(self) -> str:
        return json.dumps(asdict(self.config), sort_keys=True)

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], config_json: str) -> "NeuralDecoder":
        """Rebuild from :meth:`to_tensors` output (other tensors are ignored) and the config."""
        params = {name[len(NEURAL_PREFIX):]: value for name, value in tensors.items() if name.startswith(NEURAL_PREFIX)}
        return cls(params, NeuralDecoderConfig.from_dict(json.loads(config_json)))

    def _check(self) -> None:
        expected = {"w_in", "b_in", "code_embedding", "ln_out_g", "ln_out_b", "w_out", "b_out"}
        for block in range(self.config.blocks):
            expected |= {f"ln{block}_g", f"ln{block}_b", f"w1_{block}", f"b1_{block}", f"w2_{block}", f"b2_{block}"}
        missing = expected - set(self.params)
        if missing:
            raise ValueError(f"neural decoder lacks tensors {sorted(missing)}")
        if self.params["code_embedding"].ndim != 3 or self.params["w_in"].shape[1] != self.config.hidden:
            raise ValueError("neural decoder tensors do not match its config")


# -- training -----------------------------------------------------------------------------
def fit_neural_decoder(
    targets: np.ndarray,
    codes: np.ndarray,
    linear: np.ndarray,
    codebook_size: int,
    config: NeuralDecoderConfig | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> tuple[NeuralDecoder, NeuralFitReport]:
    """Train a decoder from ``codes`` (n, M) and their ``linear`` reconstructions to ``targets``.

    Deterministic for a ``seed`` on one machine and thread count. The held-out split is drawn
    from ``seed``; the returned decoder has the weights of the epoch with the lowest held-out
    error (epoch 0, the linear decoder itself, when no epoch beat it).
    """
    import torch

    config = config or NeuralDecoderConfig()
    targets = np.ascontiguousarray(targets, dtype=np.float32)
    linear = np.ascontiguousarray(linear, dtype=np.float32)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    n, dim = targets.shape
    if codes.shape[0] != n or linear.shape != targets.shape:
        raise ValueError("targets, codes and linear reconstructions must have one row per vector")
    if n < MIN_TRAIN_VECTORS:
        raise ValueError(f"need at least {MIN_TRAIN_VECTORS} vectors to train a neural decoder, got {n}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    held = max(1, int(round(n * config.holdout)))
    held_idx, train_idx = np.sort(order[:held]), np.sort(order[held:])

    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(seed)
        model = _TorchDecoder(dim, codes.shape[1], codebook_size, config)
        t_targets, t_codes, t_linear = (torch.from_numpy(a) for a in (targets, codes, linear))
        offsets = torch.arange(codes.shape[1], dtype=torch.int64) * codebook_size

        def held_out_error() -> float:
            model.eval()
            with torch.no_grad():
                idx = torch.from_numpy(held_idx)
                error = ((model(t_codes[idx] + offsets, t_linear[idx]) - t_targets[idx]) ** 2).sum()
                norm = (t_targets[idx] ** 2).sum()
            model.train()
            return float(error / norm)

        optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=config.learning_rate, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.1
        )
        linear_error = held_out_error()
        best_error, best_epoch, best_state = linear_error, 0, _state_copy(model)
        history: list[float] = []
        generator = torch.Generator().manual_seed(seed)
        train_tensor = torch.from_numpy(train_idx)
        epochs_run = 0
        bar = _progress(config.epochs, progress)
        for epoch in range(1, config.epochs + 1):
            epochs_run = epoch
            shuffled = train_tensor[torch.randperm(len(train_tensor), generator=generator)]
            for start in range(0, len(shuffled), config.batch_size):
                batch = shuffled[start : start + config.batch_size]
                batch_codes = t_codes[batch] + offsets
                loss = ((model(batch_codes, t_linear[batch], dropout=config.code_dropout) - t_targets[batch]) ** 2).sum(1).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
            error = held_out_error()
            history.append(error)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(held_out=f"{error:.4f}", linear=f"{linear_error:.4f}")
            if error < best_error:
                best_error, best_epoch, best_state = error, epoch, _state_copy(model)
            elif epoch - best_epoch >= config.patience:
                break
        if bar is not None:
            bar.close()
        model.load_state_dict(best_state)
        decoder = NeuralDecoder(model.export(), config)
    finally:
        torch.set_num_threads(previous_threads)
    report = NeuralFitReport(
        train_vectors=len(train_idx), held_out_vectors=held, epochs_run=epochs_run, best_epoch=best_epoch,
        seconds=time.perf_counter() - started, linear_held_out_error=linear_error, held_out_error=best_error,
        held_out_history=history,
    )
    return decoder, report


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="neural decoder", unit="epoch")


def _state_copy(model) -> dict[str, Any]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _torch_decoder_class():
    import torch
    from torch import nn

    class TorchDecoder(nn.Module):
        """The training twin of :class:`NeuralDecoder` (same function, torch modules)."""

        def __init__(self, dim: int, num_subvectors: int, codebook_size: int, config: NeuralDecoderConfig) -> None:
            super().__init__()
            self.num_subvectors, self.codebook_size, self.config = num_subvectors, codebook_size, config
            hidden = config.hidden
            self.w_in = nn.Linear(dim, hidden)
            self.code_embedding = nn.Embedding(num_subvectors * codebook_size, hidden)
            nn.init.normal_(self.code_embedding.weight, std=0.02)
            self.norms = nn.ModuleList(nn.LayerNorm(hidden, eps=_LN_EPS) for _ in range(config.blocks))
            self.first = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(config.blocks))
            self.second = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(config.blocks))
            self.norm_out = nn.LayerNorm(hidden, eps=_LN_EPS)
            self.w_out = nn.Linear(hidden, dim)
            nn.init.zeros_(self.w_out.weight)  # starts as the linear decoder
            nn.init.zeros_(self.w_out.bias)

        def forward(self, flat_codes, linear, dropout: float = 0.0):
            embedded = self.code_embedding(flat_codes)  # (n, M, hidden)
            if dropout > 0.0 and self.training:
                keep = (torch.rand(embedded.shape[:2], device=embedded.device) >= dropout).to(embedded.dtype)
                embedded = embedded * keep.unsqueeze(-1)
            hidden = self.w_in(linear) + embedded.sum(1)
            for norm, first, second in zip(self.norms, self.first, self.second):
                hidden = hidden + second(nn.functional.gelu(first(norm(hidden)), approximate="tanh"))
            return linear + self.w_out(nn.functional.gelu(self.norm_out(hidden), approximate="tanh"))

        def export(self) -> dict[str, np.ndarray]:
            def array(tensor) -> np.ndarray:
                return tensor.detach().cpu().numpy().astype(np.float32)

            params = {
                "w_in": array(self.w_in.weight).T, "b_in": array(self.w_in.bias),
                "code_embedding": array(self.code_embedding.weight).reshape(self.num_subvectors, self.codebook_size, -1),
                "ln_out_g": array(self.norm_out.weight), "ln_out_b": array(self.norm_out.bias),
                "w_out": array(self.w_out.weight).T, "b_out": array(self.w_out.bias),
            }
            for block, (norm, first, second) in enumerate(zip(self.norms, self.first, self.second)):
                params.update({
                    f"ln{block}_g": array(norm.weight), f"ln{block}_b": array(norm.bias),
                    f"w1_{block}": array(first.weight).T, f"b1_{block}": array(first.bias),
                    f"w2_{block}": array(second.weight).T, f"b2_{block}": array(second.bias),
                })  # fmt: skip
            return params

    return TorchDecoder


def _TorchDecoder(dim: int, num_subvectors: int, codebook_size: int, config: NeuralDecoderConfig):
    return _torch_decoder_class()(dim, num_subvectors, codebook_size, config)
