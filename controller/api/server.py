"""Run the API with uvicorn in a background thread of the controller process."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _ThreadServer(uvicorn.Server):
    """uvicorn server that leaves signal handling to the host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen now, so a busy port fails in the caller's thread."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve API listen address {host!r}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen for the API on {host}:{port}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


class ApiServer:
    """uvicorn serving ``app`` on ``host:port`` from a daemon thread.

    ``port=0`` picks a free port; read it from ``.port`` after ``start()``.
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 8080, *,
                 access_log: bool = False, backlog: int = 128) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.access_log = access_log
        self.backlog = backlog
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Listen and serve; returns once requests are accepted.

        Raises OSError if the address cannot be bound (e.g. port in use) and
        RuntimeError if uvicorn fails or does not come up within ``timeout``.
        """
        if self.running:
            raise RuntimeError("API server already running")
        sock = _listen(self.host, self.port, self.backlog)
        self.port = sock.getsockname()[1]
        # log_config=None: uvicorn's loggers propagate to the root logger.
        config = uvicorn.Config(self.app, log_config=None, access_log=self.access_log,
                                lifespan="auto", backlog=self.backlog)
        server = _ThreadServer(config)
        self._server, self._error = server, None
        self._thread = threading.Thread(target=self._run, args=(server, sock),
                                        name="hubshift-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive():
                sock.close()
                raise RuntimeError(f"API server failed to start: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"API server did not start within {timeout:.0f}s")
            time.sleep(0.01)
        log.info("API listening on %s", self.url)

    def _run(self, server: _ThreadServer, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn reports startup failures via SystemExit
            self._error = exc
            log.error("API server stopped: %r", exc)
        finally:
            sock.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, finish in-flight requests, and join the thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None
