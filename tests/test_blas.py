"""Choosing MLX's BLAS: the survey on this CPU, environment for new processes, refusals."""

from __future__ import annotations

import json

import pytest

from datamodel.errors import ConfigError
from profiling.capture.libraries import loaded_blas
from workloads.stack import blas
from workloads.stack.blas import blas_env, check_preload, openblas_path, resolve, survey


def test_bundled_strips_an_inherited_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/libopenblas.so.0:/opt/libother.so:/v/libmkl_rt.so.3")
    assert blas_env("bundled") == {"LD_PRELOAD": "/opt/libother.so"}
    monkeypatch.delenv("LD_PRELOAD")
    assert blas_env("bundled") == {}


def test_a_library_is_preloaded_first_with_one_thread(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/libother.so")
    env = blas_env("openblas")
    assert env["LD_PRELOAD"] == f"{openblas_path()}:/opt/libother.so"
    assert env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    mkl = blas.mkl_path()
    if mkl is not None:  # x86_64 Linux, where the set-up installs the mkl wheel
        env = blas_env("mkl")
        assert env["LD_PRELOAD"].startswith(str(mkl)) and env["MKL_THREADING_LAYER"] == "SEQUENTIAL"


def test_bad_choices_and_libraries_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="blas must be one of"):
        blas_env("atlas")
    with pytest.raises(ConfigError, match="blas must be one of"):
        resolve("atlas")
    fake = tmp_path / "libopenblas.so.0"
    fake.write_bytes(b"not a library")
    assert check_preload(str(fake)) is not None
    monkeypatch.setenv("LOADLENS_OPENBLAS", str(fake))
    with pytest.raises(ConfigError, match="cannot serve MLX here"):
        blas_env("openblas")
    monkeypatch.setenv("LOADLENS_OPENBLAS", str(tmp_path / "missing.so"))
    with pytest.raises(ConfigError, match="not installed"):
        blas_env("openblas")


def test_the_survey_measures_every_candidate_and_is_cached_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADLENS_OPENBLAS", str(tmp_path / "missing.so"))
    found = survey(1, tmp_path)
    by_name = {c["blas"]: c for c in found["candidates"]}
    assert set(by_name) == set(blas.CANDIDATES)
    assert by_name["bundled"]["ok"] and by_name["bundled"]["gflops"] > 0
    assert by_name["bundled"]["max_rel_error"] < blas.MAX_REL_ERROR
    assert not by_name["openblas"]["ok"] and "not installed" in by_name["openblas"]["problem"]
    fastest = max((c for c in found["candidates"] if c["ok"]), key=lambda c: c["gflops"])
    assert found["fastest"] == fastest["blas"] and found["cpu"] == blas.cpu_model()
    (cached,) = (tmp_path / "blas").glob("*.json")
    assert json.loads(cached.read_text()) == found
    assert resolve("fastest", tmp_path) == found["fastest"]  # read back, not measured again
    monkeypatch.setattr(blas, "_measure", lambda *a: pytest.fail("measured again"))
    assert survey(1, tmp_path) == found


def test_loaded_blas_reads_this_process_maps():
    import mlx.core as mx

    mx.eval(mx.ones((8, 8)) @ mx.ones((8, 8)))
    assert any("blas" in p.lower() or "mkl" in p.lower() for p in loaded_blas())
