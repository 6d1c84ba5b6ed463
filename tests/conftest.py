"""Shared fixtures: real MLX models at tiny scale, generated once per test session."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from workloads.service.basemodel import BaseModel, ensure_default_base_model, load_base_model


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadlens cache folder private to this test session."""
    return tmp_path_factory.mktemp("loadlens-cache")


@pytest.fixture(scope="session")
def base_model_path(cache_dir: Path) -> Path:
    """The default generated base model, made once for the session."""
    return ensure_default_base_model(cache_dir / "models")


@pytest.fixture()
def base_model(base_model_path: Path) -> BaseModel:
    """A freshly loaded base model (tests may wrap or swap its layers freely)."""
    return load_base_model(base_model_path)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create ``files`` (relative path -> text or bytes) under ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return root


TINY_PROJECTS: dict[str, dict[str, str | bytes]] = {
    "alpha": {
        "geometry.py": '''
            def circle_area(radius):
                """Area of a circle."""
                return 3.14159 * radius * radius

            def square_area(side):
                return side * side
            ''',
        "README.md": "# alpha\nGeometry helpers for shapes and areas.\n",
    },
    "beta": {
        "net/http_client.py": '''
            import socket

            def fetch(host, port=80):
                """Open a TCP connection and send an HTTP GET request."""
                with socket.create_connection((host, port)) as conn:
                    conn.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                    return conn.recv(4096)
            ''',
    },
    "gamma": {
        "db/store.py": '''
            import sqlite3

            class Store:
                """A key-value store on top of sqlite."""

                def __init__(self, path):
                    self.conn = sqlite3.connect(path)

                def put(self, key, value):
                    self.conn.execute("insert into kv values (?, ?)", (key, value))
            ''',
    },
}


@pytest.fixture(scope="session")
def tiny_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small real source trees, one per project."""
    base = tmp_path_factory.mktemp("trees")
    return {name: write_tree(base / name, files) for name, files in TINY_PROJECTS.items()}
