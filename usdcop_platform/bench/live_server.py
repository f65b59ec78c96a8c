"""An ASGI app served by a real uvicorn in a background thread on a free loopback port: real HTTP
and real concurrency, for the chaos benchmark and the API tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

START_TIMEOUT_S = 30.0


class LiveServer:
    def __init__(self, app: Any, *, log_level: str = "warning") -> None:
        import uvicorn  # loads where it is used (code-location import cost)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_S)
