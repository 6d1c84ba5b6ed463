"""The MLX MiniLM encoder against sentence-transformers' own vectors (committed .npy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from workloads.errors import ModelError
from workloads.service.embedder import Embedder, minilm_dir

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    texts = json.loads((DATA / "minilm_reference_texts.json").read_text())
    return texts, np.load(DATA / "minilm_reference.npy")


@pytest.mark.parametrize("fast_math", [True, False])
def test_cosine_against_sentence_transformers(reference, fast_math):
    texts, ref = reference
    vectors = Embedder(fast_math=fast_math).embed(texts)
    cosines = np.sum(vectors * ref, axis=1)
    assert cosines.min() >= 0.999, dict(zip(texts, cosines.round(5), strict=True))


def test_batching_and_bucketing_change_nothing(reference):
    texts, _ = reference
    one = Embedder(batch_size=1, length_bucketing=False).embed(texts)
    many = Embedder(batch_size=7, length_bucketing=True)
    vectors = many.embed(texts)
    assert np.abs(one - vectors).max() <= 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert many.stats.texts == len(texts) and many.stats.batches == -(-len(texts) // 7)
    assert Embedder().embed([]).shape == (0, 384)


def test_broken_model_folders_name_the_file(tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(minilm_dir(), truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match=r"truncated/model\.safetensors"):
        Embedder(model_dir=truncated)
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(minilm_dir(), no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"no-tokenizer/tokenizer\.json"):
        Embedder(model_dir=no_tokenizer)
