"""The base language model: a default one generated locally, any mlx-lm directory loaded.

The default base model is a small llama built with mlx-lm's own model classes from a fixed
seed and saved in the standard mlx-lm layout (config.json, model.safetensors, tokenizer
files), once, into a cache directory. Nothing is fetched from a model hub. Its tokenizer
is MiniLM's WordPiece tokenizer, taken from the same package as the embedding model, so
no tokenizer needs training or downloading.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tokenizers import Tokenizer

from datamodel.errors import ModelError
from workloads.service.safetensors_check import check_safetensors

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class BaseModelSpec:
    """Shape of the generated default base model (a llama in mlx-lm's format)."""

    hidden_size: int = 256
    """Width of the residual stream."""
    num_hidden_layers: int = 4
    """Transformer blocks."""
    intermediate_size: int = 688
    """Width of each block's MLP."""
    num_attention_heads: int = 4
    """Query heads per block."""
    num_key_value_heads: int = 2
    """Key/value heads per block (grouped-query attention)."""
    seed: int = 0
    """Seed of the random weights: the same seed gives the same model everywhere."""

    def key(self) -> str:
        """A short stable name for this spec, used as the cache folder's name."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"base-llama-{digest[:12]}"


@dataclass
class BaseModel:
    """A loaded base model, its tokenizer and its mlx-lm config."""

    path: Path
    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any]

    @property
    def parameter_bytes(self) -> int:
        """Bytes held by the model's parameters."""
        from mlx.utils import tree_flatten

        leaves = cast(list[tuple[str, mx.array]], tree_flatten(self.model.parameters()))
        return sum(v.nbytes for _, v in leaves)


def _mlx_config(spec: BaseModelSpec, vocab_size: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "intermediate_size": spec.intermediate_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "eos_token_id": 102,
        "bos_token_id": 101,
    }


def ensure_default_base_model(cache_dir: Path, spec: BaseModelSpec | None = None) -> Path:
    """Return the folder of the default base model, generating it once if it is absent.

    Generation writes into a temporary folder and renames it into place, so a crash never
    leaves a half-written model that later runs would trust.
    """
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    from workloads.service.embedder import minilm_dir

    spec = spec or BaseModelSpec()
    target = Path(cache_dir) / spec.key()
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    source = minilm_dir()
    vocab_size = Tokenizer.from_file(str(source / "tokenizer.json")).get_vocab_size()
    config = _mlx_config(spec, vocab_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=target.parent))
    try:
        mx.random.seed(spec.seed)
        model = llama.Model(llama.ModelArgs.from_dict(config))
        mx.eval(model.parameters())
        save_model(tmp, model)
        save_config(dict(config), tmp / "config.json")
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race: another wrote it
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_base_model(path: Path) -> BaseModel:
    """Load any mlx-lm model folder, checking its files first so errors name them."""
    from mlx_lm.utils import load_model

    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"base model folder {path} does not exist")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"base model folder {path} has no config.json (not an mlx-lm model)")
    weight_files = sorted(path.glob("*.safetensors"))
    if not weight_files:
        raise ModelError(f"base model folder {path} has no *.safetensors weights")
    for weights in weight_files:
        check_safetensors(weights, ModelError)
    tokenizer_path = path / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(f"base model folder {path} has no tokenizer.json")
    try:
        model, config = load_model(path)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"base model at {path} does not load with mlx-lm: {exc}") from exc
    model.eval()
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad files
        raise ModelError(f"{tokenizer_path} is not a valid tokenizer file: {exc}") from exc
    return BaseModel(path=path, model=model, tokenizer=tokenizer, config=config)


def generate_greedy(model: nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Prefill ``prompt`` and generate ``max_new_tokens`` greedy tokens with a KV cache.

    Each step is evaluated before the next one starts, so a caller's clock around this
    call measures the real work.
    """
    from mlx_lm.models.cache import make_prompt_cache

    if not prompt:
        raise ModelError("cannot run the base model on an empty prompt")
    cache = make_prompt_cache(model)
    logits = model(mx.array(prompt)[None], cache=cache)
    token = mx.argmax(logits[:, -1, :], axis=-1)
    mx.eval(token)
    out = [int(np.asarray(token)[0])]
    for _ in range(max_new_tokens - 1):
        logits = model(token[:, None], cache=cache)
        token = mx.argmax(logits[:, -1, :], axis=-1)
        mx.eval(token)
        out.append(int(np.asarray(token)[0]))
    return out
