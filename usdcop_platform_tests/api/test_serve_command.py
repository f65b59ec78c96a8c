"""`usdcop serve` runs the sidecar under uvicorn: health, pages and docs answer over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

START_TIMEOUT_S = 60

pytestmark = pytest.mark.slow


def test_usdcop_serve_answers_health_pages_and_docs(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "USDCOP_STATE_DIR": str(tmp_path / "state"), "USDCOP_DATA_DIR": str(tmp_path / "lake"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "usdcop_platform.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"usdcop serve did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.5)
        assert health.status_code == 200
        assert health.json()["database"] == {
            "status": "ok", "dialect": "sqlite", "revision": health.json()["database"]["revision"],
            "registry_version": 0, "detail": None,
        }
        login = httpx.get(f"{base}/experiments", follow_redirects=True, timeout=10)
        assert login.status_code == 200 and 'name="api_key"' in login.text
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
        assert httpx.get(f"{base}/api/experiments", timeout=10).status_code == 401
        icon = httpx.get(f"{base}/favicon.ico", timeout=10)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/experiments" in out


def test_usdcop_serve_on_a_busy_port_says_so_and_never_claims_to_serve(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        env = {**os.environ, "USDCOP_STATE_DIR": str(tmp_path / "state"), "USDCOP_DATA_DIR": str(tmp_path / "lake"),
               "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
        done = subprocess.run(
            [sys.executable, "-m", "usdcop_platform.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S,
        )
    assert done.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "serving" not in done.stdout and "startup complete" not in (done.stdout + done.stderr).lower()
