"""A real ``mlx_lm.server`` that loadlens starts, watches and always stops.

It runs the installed mlx-lm's own server (``python -m mlx_lm.server``) on 127.0.0.1 and a
free port, with the run's base model, the fastest BLAS measured here preloaded, and the
kernel told to stop it if loadlens dies. Each project's requests name the base model and
the project's adapter folder (mlx-lm's per-request ``"model"`` and ``"adapters"``): the
server then loads that (model, adapter) pair, and loads again whenever it changes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from workloads.stack.http import Routing, wait_until_up

START_TIMEOUT_S = 180.0
"""Longest the server may take to answer its first request."""
STOP_TIMEOUT_S = 10.0
"""Longest it may take to exit after SIGTERM before it is killed."""


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGTERM when loadlens's process ends (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedServer:
    """``mlx_lm.server`` as a child process of this one."""

    def __init__(self, model: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.model = Path(model)
        self.log = Path(log)
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start it and wait until it answers; returns its URL. Stops it on any failure."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "mlx_lm.server",
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                preexec_fn=_die_with_parent,
                start_new_session=True,  # a Ctrl-C at the terminal is loadlens's to handle
            )
        try:
            wait_until_up(self.url, timeout=timeout, alive=self.alive)
        except BaseException:
            self.stop()
            raise
        return self.url

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`; returns its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def routes_for(model: Path, adapters: dict[str, Path]) -> dict[str, Routing]:
    """Each project's requests: the base model's path and the project's adapter folder."""
    return {name: Routing(str(model), {"adapters": str(path)}) for name, path in adapters.items()}


def prepare_adapters(
    cache: str, base_model: str | None, projects: list[tuple[str, str | None]], rank: int
) -> dict[str, Any]:
    """In a process of its own (it loads MLX): the base model path and every project's
    adapter folder, generating the default model and missing adapters as the builtin
    stack does."""
    from workloads.service.basemodel import ensure_default_base_model, load_base_model
    from workloads.service.service import adapter_root, project_adapter

    model = Path(base_model) if base_model else ensure_default_base_model(Path(cache) / "models")
    root = adapter_root(Path(cache), model)
    loaded = None
    adapters: dict[str, str] = {}
    for name, given in projects:
        if given:
            adapters[name] = given
            continue
        if loaded is None:
            loaded = load_base_model(model)
        adapters[name] = str(project_adapter(root, name, loaded.model, rank))
    return {"model": str(model), "adapters": adapters}
