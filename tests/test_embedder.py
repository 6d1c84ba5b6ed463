"""The MLX all-MiniLM-L6-v2 embedder against sentence-transformers' own vectors.

The reference vectors in tests/data were made by scripts/make_reference_vectors.py
(sentence-transformers on torch, CPU). Everything here runs the real model on MLX.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from safetensors.numpy import save_file

from datamodel.errors import ModelError
from workloads.service.embedder import Embedder, _gelu_fast, _softmax_fast, minilm_dir

DATA = Path(__file__).parent / "data"
TEXTS: list[str] = json.loads((DATA / "minilm_reference_texts.json").read_text("utf-8"))
REFERENCE: np.ndarray = np.load(DATA / "minilm_reference.npy")


@pytest.fixture(scope="module", params=[True, False], ids=["fast_math", "exact"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return Embedder(fast_math=request.param, batch_size=8)


@pytest.fixture(scope="module")
def fast_vectors() -> np.ndarray:
    """The vectors at the default batch size (32: all texts in one batch)."""
    return Embedder(fast_math=True).embed(TEXTS)


def test_fast_math_matches_mlx_exact_kernels() -> None:
    """The staged approximations against mx.softmax(precise) and erf GELU, over the range
    attention scores and activations take, masked keys (-1e6) included."""
    rng = np.random.default_rng(7)
    scores = rng.normal(0, 6, (4, 3, 16, 64)).astype(np.float32)
    scores[..., 50:] = -1e6  # padding keys
    scores[0, 0, 0, :50] = np.linspace(-90, 40, 50)  # a row spanning past exp's range
    s = mx.array(scores)
    got = np.array(_softmax_fast(s))
    want = np.array(mx.softmax(s, axis=-1, precise=True))
    np.testing.assert_allclose(got, want, atol=5e-6, rtol=0)
    assert np.all(got[..., 50:] < 1e-30) and np.allclose(got.sum(-1), 1, atol=1e-5)
    x = mx.array(np.linspace(-12, 12, 100_001, dtype=np.float32))
    np.testing.assert_allclose(np.array(_gelu_fast(x)), np.array(nn.gelu(x)), atol=2e-6, rtol=0)


def test_reference_data_is_consistent() -> None:
    assert REFERENCE.dtype == np.float32
    assert REFERENCE.shape == (len(TEXTS), 384)
    assert max(len(t.split()) for t in TEXTS) > 128  # so some text is truncated


def test_matches_sentence_transformers(embedder: Embedder) -> None:
    vecs = embedder.embed(TEXTS)
    assert isinstance(vecs, np.ndarray)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    norms = np.linalg.norm(vecs, axis=1) * np.linalg.norm(REFERENCE, axis=1)
    cosine = (vecs * REFERENCE).sum(axis=1) / norms
    worst = int(cosine.argmin())
    assert cosine.min() >= 0.999, f"text {worst} {TEXTS[worst][:40]!r}: cosine {cosine[worst]}"


def test_output_is_l2_normalised(fast_vectors: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(fast_vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("batch_size", "bucketing"), [(1, True), (8, False), (5, True)])
def test_batching_and_bucketing_do_not_change_vectors(
    fast_vectors: np.ndarray, batch_size: int, bucketing: bool
) -> None:
    emb = Embedder(batch_size=batch_size, length_bucketing=bucketing)
    np.testing.assert_allclose(emb.embed(TEXTS), fast_vectors, atol=1e-5)
    assert emb.stats.batches == -(-len(TEXTS) // batch_size)


def test_results_follow_input_order(fast_vectors: np.ndarray) -> None:
    emb = Embedder(batch_size=4)
    order = np.random.default_rng(0).permutation(len(TEXTS))
    vecs = emb.embed([TEXTS[i] for i in order])
    np.testing.assert_allclose(vecs, fast_vectors[order], atol=1e-5)


def test_bucketing_reduces_padding_and_counts_tokens() -> None:
    texts = TEXTS * 2
    bucketed, plain = Embedder(batch_size=8), Embedder(batch_size=8, length_bucketing=False)
    bucketed.embed(texts)
    plain.embed(texts)
    assert bucketed.stats.texts == plain.stats.texts == len(texts)
    assert bucketed.stats.tokens == plain.stats.tokens > len(texts) * 2
    assert bucketed.stats.padded_tokens < plain.stats.padded_tokens
    assert bucketed.stats.seconds > 0


def test_empty_input() -> None:
    emb = Embedder()
    out = emb.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert emb.dim == 384
    assert (emb.stats.texts, emb.stats.batches, emb.stats.tokens) == (0, 0, 0)


def test_minilm_dir_finds_the_packaged_model() -> None:
    folder = minilm_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def _model_copy(tmp_path: Path, skip: str) -> Path:
    """A copy of the model folder without ``skip`` (big files are symlinked)."""
    src = minilm_dir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        if name == skip:
            continue
        if name == "model.safetensors":
            (tmp_path / name).symlink_to(src / name)
        else:
            shutil.copy(src / name, tmp_path / name)
    return tmp_path


def test_truncated_weights_raise_model_error(tmp_path: Path) -> None:
    folder = _model_copy(tmp_path, skip="model.safetensors")
    with (minilm_dir() / "model.safetensors").open("rb") as fh:
        (folder / "model.safetensors").write_bytes(fh.read(3_000_000))
    with pytest.raises(ModelError, match=re.escape(str(folder / "model.safetensors"))):
        Embedder(model_dir=folder)


def test_wrong_weights_raise_model_error_naming_key(tmp_path: Path) -> None:
    folder = _model_copy(tmp_path, skip="model.safetensors")
    save_file(
        {"embeddings.word_embeddings.weight": np.zeros((10, 384), np.float32)},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(ModelError, match=r"model\.safetensors.*word_embeddings"):
        Embedder(model_dir=folder)


def test_missing_tokenizer_raises_model_error(tmp_path: Path) -> None:
    folder = _model_copy(tmp_path, skip="tokenizer.json")
    with pytest.raises(ModelError, match=re.escape(str(folder / "tokenizer.json"))):
        Embedder(model_dir=folder)
