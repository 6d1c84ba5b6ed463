"""Choosing MLX's BLAS: environment for new processes, refusal of a library that can't serve."""

from __future__ import annotations

import pytest

from datamodel.errors import ConfigError
from workloads.blas import blas_env, check_preload, loaded_blas, openblas_path


def test_bundled_strips_an_inherited_openblas(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/libopenblas.so.0:/opt/libother.so")
    assert blas_env("bundled") == {"LD_PRELOAD": "/opt/libother.so"}
    monkeypatch.delenv("LD_PRELOAD")
    assert blas_env("bundled") == {}


def test_openblas_is_preloaded_first_and_threads_are_bound(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/libother.so")
    env = blas_env("openblas", threads=3)
    assert env["LD_PRELOAD"] == f"{openblas_path()}:/opt/libother.so"
    assert env["OPENBLAS_NUM_THREADS"] == "3"


def test_bad_choices_and_libraries_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="blas must be one of"):
        blas_env("mkl")
    fake = tmp_path / "libopenblas.so.0"
    fake.write_bytes(b"not a library")
    assert check_preload(str(fake)) is not None
    monkeypatch.setenv("LOADLENS_OPENBLAS", str(fake))
    with pytest.raises(ConfigError, match="cannot serve MLX here"):
        blas_env("openblas")
    monkeypatch.setenv("LOADLENS_OPENBLAS", str(tmp_path / "missing.so"))
    with pytest.raises(ConfigError, match="no OpenBLAS was found"):
        blas_env("openblas")


def test_loaded_blas_reads_this_process_maps():
    import mlx.core as mx

    mx.eval(mx.ones((8, 8)) @ mx.ones((8, 8)))
    assert any("blas" in p.lower() for p in loaded_blas())
