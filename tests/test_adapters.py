"""AdapterManager on a real generated base model: swap, restore, cache, and bad adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_model

from datamodel.errors import AdapterError
from workloads.service.adapters import AdapterManager, AdapterSpec, LoRASlot, generate_adapter
from workloads.service.basemodel import BaseModel, BaseModelSpec, ensure_default_base_model

PROMPT = [101, 2023, 2003, 1037, 3231, 1997, 1996, 2944, 102]


def logits(model: object, tokens: list[int] = PROMPT) -> mx.array:
    out = model(mx.array(tokens)[None])  # type: ignore[operator]
    mx.eval(out)
    return out


@pytest.fixture()
def adapters(base_model: BaseModel, tmp_path: Path) -> dict[str, Path]:
    return {
        name: generate_adapter(tmp_path / name, base_model.model, spec=AdapterSpec(), seed=seed)
        for seed, name in enumerate(["p1", "p2", "p3"], start=1)
    }


def manager(base_model: BaseModel, adapters: dict[str, Path], **kw: int) -> AdapterManager:
    m = AdapterManager(
        base_model.model, max_bytes=kw.get("max_bytes", 10**9), max_count=kw.get("max_count", 8)
    )
    for name, path in adapters.items():
        m.register(name, path)
    return m


def test_swap_changes_outputs_and_unload_restores_base(base_model, adapters):
    base = logits(base_model.model)
    m = manager(base_model, adapters)
    m.activate("p1")
    with_p1 = logits(base_model.model)
    m.activate("p2")
    with_p2 = logits(base_model.model)
    assert mx.abs(with_p1 - base).max().item() > 1e-2
    assert mx.abs(with_p2 - with_p1).max().item() > 1e-2
    assert m.unload("p2") is True
    assert m.active is None
    assert mx.abs(logits(base_model.model) - base).max().item() <= 1e-5
    m.activate("p1")  # still cached: a hit, same outputs as before
    assert mx.abs(logits(base_model.model) - with_p1).max().item() <= 1e-5
    assert m.stats.hits >= 1 and m.stats.misses == 2
    assert len(m.stats.unload_seconds) == 1


def test_in_place_swap_matches_mlx_lm_reload(base_model, base_model_path, adapters):
    m = manager(base_model, adapters)
    m.activate("p3")
    ours = logits(base_model.model)
    reference, _ = load_model(base_model_path)
    load_adapters(reference, str(adapters["p3"]))
    assert mx.abs(logits(reference) - ours).max().item() <= 1e-5


def test_swapping_never_nests_lora(base_model, adapters):
    m = manager(base_model, adapters)
    for name in ["p1", "p2", "p1", "p3", "p2"]:
        m.activate(name)
    slots = [mod for _, mod in base_model.model.named_modules() if isinstance(mod, LoRASlot)]
    assert slots and all(not isinstance(s.linear, LoRASlot) for s in slots)


def test_lru_eviction_by_count_and_bytes(base_model, adapters):
    m = manager(base_model, adapters, max_count=2)
    for name in ["p1", "p2", "p3"]:
        m.activate(name)
    assert m.resident == ["p2", "p3"] and m.stats.evictions == 1
    one = m.bytes_resident // 2
    m2 = manager(base_model, adapters, max_bytes=one)
    m2.activate("p1")
    m2.activate("p2")
    assert m2.resident == ["p2"] and m2.active == "p2" and m2.stats.evictions == 1
    m2.activate("p1")  # evicted before: a miss again
    assert m2.stats.misses == 3


def test_adapter_bigger_than_budget_is_refused(base_model, adapters):
    m = manager(base_model, adapters, max_bytes=1000)
    with pytest.raises(AdapterError, match="larger than the adapter cache budget"):
        m.activate("p1")
    assert m.active is None


def corrupt_cases(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}
    trunc = tmp_path / "truncated"
    shutil.copytree(good, trunc)
    data = (trunc / "adapters.safetensors").read_bytes()
    (trunc / "adapters.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (trunc, "truncated")
    garbage = tmp_path / "garbage"
    shutil.copytree(good, garbage)
    (garbage / "adapters.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    )
    cases["garbage"] = (garbage, "not JSON")
    rank = tmp_path / "wrong-rank"
    shutil.copytree(good, rank)
    config = json.loads((rank / "adapter_config.json").read_text())
    config["lora_parameters"]["rank"] = 4
    (rank / "adapter_config.json").write_text(json.dumps(config))
    cases["rank"] = (rank, "rank 4 needs")
    pickle_only = tmp_path / "pickle-only"
    pickle_only.mkdir()
    shutil.copy(good / "adapter_config.json", pickle_only)
    (pickle_only / "adapters.bin").write_bytes(b"\x80\x04pickle")
    cases["pickle"] = (pickle_only, "adapters.safetensors does not exist")
    cases["missing"] = (tmp_path / "nowhere", "does not exist")
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    shutil.copy(good / "adapters.safetensors", no_config)
    cases["no-config"] = (no_config, "adapter_config.json is missing")
    return cases


def test_bad_adapters_raise_clear_errors_and_others_keep_working(base_model, adapters, tmp_path):
    m = manager(base_model, adapters)
    base = logits(base_model.model)
    m.activate("p1")
    with_p1 = logits(base_model.model)
    for name, (path, message) in corrupt_cases(tmp_path, adapters["p2"]).items():
        m.register(name, path)
        with pytest.raises(AdapterError) as info:
            m.activate(name)
        assert message in str(info.value) and name in str(info.value)
        assert m.active == "p1"
        assert mx.abs(logits(base_model.model) - with_p1).max().item() <= 1e-5
    m.deactivate()
    assert mx.abs(logits(base_model.model) - base).max().item() <= 1e-5


def test_adapter_for_another_base_model_is_refused(base_model, cache_dir, tmp_path):
    from workloads.service.basemodel import load_base_model

    other_path = ensure_default_base_model(cache_dir / "models", BaseModelSpec(hidden_size=128))
    other = load_base_model(other_path)
    foreign = generate_adapter(tmp_path / "foreign", other.model, spec=AdapterSpec(), seed=9)
    m = AdapterManager(base_model.model, max_bytes=10**9, max_count=4)
    m.register("foreign", foreign)
    with pytest.raises(AdapterError, match=r"foreign.*has shape \[128, 8\].*needs \[256, 8\]"):
        m.activate("foreign")


def test_unknown_adapter_lists_known(base_model, adapters):
    m = manager(base_model, adapters)
    with pytest.raises(AdapterError, match="known: p1, p2, p3"):
        m.activate("nope")
