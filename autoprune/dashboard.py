"""``autoprune dashboard OUT_DIR``: a search's study in optuna-dashboard, served on loopback by default.

optuna-dashboard (an extra: ``pip install 'autoprune[dashboard]'``) reads the study
straight from its Optuna storage, so everything the study record keeps shows there:
the study's user attributes (settings, baselines, the simple baselines' results,
the machine and versions) and each trial's parameters and metrics (``accuracy``,
``accuracy_drop``, ``flops``, ``params``, timings) as user attributes, while the
search is still running as well as after it. The baseline weights kept as an Optuna
artifact are served too when the output folder holds them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import AutopruneError
from .storage import existing_storage, open_storage

#: Where the dashboard listens unless told otherwise: this machine only.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080


def dashboard_server(
    out_dir: str | Path, storage: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> WSGIServer:
    """An HTTP server of optuna-dashboard over the study of ``out_dir`` (not yet serving: call
    ``serve_forever()``); port 0 takes a free one (``server.server_port`` says which)."""
    try:
        import optuna_dashboard
    except ImportError:
        raise AutopruneError(
            "optuna-dashboard is not installed; install it with pip install 'autoprune[dashboard]'"
        ) from None
    url = existing_storage(out_dir, storage)
    artifacts = Path(out_dir) / "artifacts"
    store = None
    if artifacts.is_dir():
        from optuna.artifacts import FileSystemArtifactStore

        store = FileSystemArtifactStore(str(artifacts))
    app = optuna_dashboard.wsgi(open_storage(url), artifact_store=store)
    try:
        return make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:  # port taken, host not an address of this machine
        raise AutopruneError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


class _QuietHandler(WSGIRequestHandler):
    """No line per request: the terminal keeps the address and the stop hint."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(server: WSGIServer, announce: Callable[[str], None]) -> None:
    """Serve until Ctrl-C, after announcing the address."""
    host, port = server.server_address[:2]
    announce(f"optuna-dashboard at http://{host}:{port}/dashboard/ (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
