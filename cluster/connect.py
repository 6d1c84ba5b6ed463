"""How loadlens finds or starts Ray.

Default: an embedded local cluster started by the run (``address="local"``, its own temp
folder, dashboard on 127.0.0.1) with Ray's token authentication turned on explicitly
(``RAY_AUTH_MODE=token``; Ray keeps the token in ``~/.ray/auth_token``): the dashboard API
and the GCS refuse requests without it. ``--address``/``RAY_ADDRESS`` joins an existing
cluster: with token authentication wherever a token is found (``$RAY_AUTH_TOKEN``,
``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``, as Ray looks), with a warning when no
token is found and the cluster lets this process in anyway; a wrong address fails within
seconds with a clear message instead of hanging, and a refused token (or none, where the
cluster wants one) is a one-line error that says where the token was looked for. A
process that is already connected (a test session, a notebook) keeps its connection: the
run uses it and leaves it open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from datamodel.errors import ConfigError

PROBE_TIMEOUT_S = 5.0
AUTH_MODE_VAR = "RAY_AUTH_MODE"
"""Ray's switch for token authentication (``token`` or ``disabled``)."""
_owned = False
"""Whether this process's Ray connection was made by :func:`connect` (and is ours to end)."""
_nested = 0
"""Calls of :func:`connect` that reused the connection this module opened (an A/B's rounds
in one session): each :func:`disconnect` of theirs leaves it open."""


@dataclass(frozen=True)
class Cluster:
    """A connected Ray cluster and how to look at it."""

    address: str
    embedded: bool
    dashboard_url: str | None
    nodes: list[dict[str, Any]]

    def token_hint(self) -> str:
        """How a person gets the token the dashboard asks for."""
        return "run `ray get-auth-token` (the token lives in ~/.ray/auth_token)"


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at ``host:port`` (ray.init would retry for long)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} is not HOST:PORT (for example 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address}: {exc.strerror or exc} "
            "(start one with `ray start --head`, or leave --address out to run embedded)"
        ) from exc


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    temp_dir: Path | None = None,
    env_vars: dict[str, str] | None = None,
) -> Cluster:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start an embedded local cluster.

    When this process is already connected, that connection is used as it is.
    """
    global _owned, _nested
    address = address or os.environ.get("RAY_ADDRESS") or None
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if ray.is_initialized():
        if _owned:  # a connection of ours, used again: the outer disconnect ends it
            _nested += 1
        node = getattr(getattr(ray, "_private", None), "worker", None)
        local = getattr(node, "_global_node", None) is not None
        return Cluster(
            address=ray.get_runtime_context().gcs_address,
            embedded=local,
            dashboard_url=None,
            nodes=_nodes(),
        )
    _owned = True
    if address:
        _check_reachable(address)
        token = token_source()
        wants = wants_token(address)
        if wants and token is None:
            raise ConfigError(_join_failure(address, None, None))
        if (wants or (wants is None and token is not None)) and not os.environ.get(AUTH_MODE_VAR):
            enable_token_auth()  # the cluster asks for its token, and one is at hand
        try:
            ctx = ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as exc:
            _owned = False
            with contextlib.suppress(Exception):
                ray.shutdown()
            raise ConfigError(_join_failure(address, exc, token)) from None
        embedded = False
        if wants is False or (wants is None and not token_auth_enabled()):
            print(
                f"warning: the Ray cluster at {address} does not use token authentication: "
                "anyone who can reach it can run code on it (see "
                "https://docs.ray.io/en/latest/ray-security/token-auth.html)",
                file=sys.stderr,
            )
    else:
        # Explicitly, not left to Ray's default: a cluster started here authenticates.
        enable_token_auth()
        temp = temp_dir or Path(tempfile.gettempdir()) / f"loadlens-ray-{os.getuid()}"
        temp.mkdir(parents=True, exist_ok=True)
        ctx = ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            _temp_dir=str(temp),
            runtime_env=runtime_env,
            log_to_driver=False,
        )
        embedded = True
    url = ctx.dashboard_url
    return Cluster(
        address=getattr(ctx, "address_info", {}).get("gcs_address", address or "local"),
        embedded=embedded,
        dashboard_url=f"http://{url}" if url and not url.startswith("http") else url,
        nodes=_nodes(),
    )


def token_source() -> str | None:
    """Where this process would find a Ray token, as Ray looks for one: ``$RAY_AUTH_TOKEN``,
    the file at ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``; ``None`` for none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "$RAY_AUTH_TOKEN"
    custom = os.environ.get("RAY_AUTH_TOKEN_PATH")
    for path in ([Path(custom)] if custom else []) + [Path.home() / ".ray" / "auth_token"]:
        try:
            if path.read_text().strip():
                return str(path)
        except OSError:
            continue
    return None


def wants_token(address: str) -> bool | None:
    """Whether the Ray cluster at ``address`` refuses requests without a token: one call to
    its GCS without one (milliseconds; Ray's own join would retry for 20 s before saying
    no). ``None`` when this Ray cannot be asked so."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return None
    host, _, port = address.rpartition(":")
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return True
            return None
    return False


def _join_failure(address: str, exc: BaseException | None, token: str | None) -> str:
    """One line for a cluster that would not let this process in (``exc``: Ray's error;
    ``None``: the cluster asked for a token before Ray was tried)."""
    if exc is None:
        what = "it uses token authentication"
    else:
        text = str(exc).strip()
        what = f"{type(exc).__name__}: {text.splitlines()[0].split('. ')[0] if text else ''}"
    if token is None:
        why = (
            "no Ray token was found here (looked in $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH and "
            "~/.ray/auth_token); if the cluster uses token authentication, copy the head's "
            "~/.ray/auth_token to this machine"
        )
    else:
        why = f"the token from {token} was presented; if the cluster refused it, copy the head's"
        why += " ~/.ray/auth_token to this machine"
    return f"could not join the Ray cluster at {address} ({what}): {why}"


def enable_token_auth() -> None:
    """Token authentication for the cluster this process starts (and for this process: Ray
    reads its config once, so it is read again, as Ray itself does when it turns it on)."""
    os.environ[AUTH_MODE_VAR] = "token"
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:
        return
    Config.initialize("")


def token_auth_enabled() -> bool:
    """Whether this process talks to Ray with token authentication."""
    try:
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationMode,
            get_authentication_mode,
        )
    except ImportError:  # a Ray without token authentication
        return False
    return bool(get_authentication_mode() == AuthenticationMode.TOKEN)


def _nodes() -> list[dict[str, Any]]:
    return [
        {
            "node_id": n["NodeID"],
            "address": n["NodeManagerAddress"],
            "alive": n["Alive"],
            "resources": n.get("Resources", {}),
        }
        for n in ray.nodes()
    ]


def disconnect() -> None:
    """Leave the cluster if :func:`connect` joined it (an embedded one is shut down with it);
    a :func:`connect` that found this connection open only counts down."""
    global _owned, _nested
    if _nested:
        _nested -= 1
        return
    if _owned and ray.is_initialized():
        ray.shutdown()
    _owned = False
