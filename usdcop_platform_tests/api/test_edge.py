"""The API's edge: body-size limit (413 before parsing), authentication before the body,
failed-login throttling (429) with no database write on a failed lookup."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from usdcop_platform.api.app import create_app
from usdcop_platform.api.inference import MAX_BATCH, N_FEATURES
from usdcop_platform.settings import Settings
from usdcop_platform_tests.api.conftest import LiveServer, make_settings

SMALL_LIMIT = 4096


@pytest.fixture
def small_client(tmp_path, db_url, store) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, db_url, USDCOP_MAX_BODY_BYTES=SMALL_LIMIT)
    with TestClient(create_app(settings, store)) as c:
        yield c


def test_default_limit_holds_the_largest_legitimate_batch() -> None:
    longest = -2.2250738585072014e-308  # the longest repr a finite float64 has (24 characters)
    body = json.dumps({"observations": [[longest] * N_FEATURES] * MAX_BATCH}, indent=2).encode()
    default = Settings.model_fields["max_body_bytes"].default
    assert len(body) < default < 20 * len(body)


def test_unauthenticated_body_is_never_parsed(client) -> None:
    # not JSON at all: parsing it first answered 422; authentication first answers 401
    for path in ("/v1/inference/batch", "/api/models/rollback", "/api/keys"):
        r = client.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        r = client.post(path, content=b"{not json", headers={"X-API-Key": "usdcop_wrong", "Content-Type": "application/json"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "invalid or revoked API key"


def test_declared_body_over_the_limit_is_413_with_a_valid_key(small_client, keys) -> None:
    body = json.dumps({"observations": [[0.0] * N_FEATURES] * MAX_BATCH}).encode()
    assert len(body) > SMALL_LIMIT
    for headers in (keys.h("viewer"), {}):  # with or without a key: the length alone decides
        r = small_client.post("/v1/inference/batch", content=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "payload_too_large" and f"{SMALL_LIMIT:,} bytes" in err["message"]


def test_streamed_body_over_the_limit_is_413(small_client, keys) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to refuse up front
        yield b'{"notes": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    r = small_client.post("/api/models/rollback", content=chunks(), headers={**keys.h("admin"), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


def test_body_under_the_limit_still_reaches_the_route(small_client, keys) -> None:
    r = small_client.post("/v1/inference/batch", json={"observations": [[0.0] * 3]}, headers=keys.h("viewer"))
    assert r.status_code == 422 and "exactly" in r.text  # validated by the route, as before


def _raw_post(port: int, path: str, declared: int, send_bytes: int, key: str | None) -> tuple[str, float]:
    """POST declaring `declared` bytes, send `send_bytes` of them, return (status line, seconds)."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n"
    if key:
        head += f"X-API-Key: {key}\r\n"
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n")
        try:
            sock.sendall(b"[" * send_bytes)
        except OSError:
            pass  # the server may close on us: it refused without reading
        status = sock.recv(4096).split(b"\r\n", 1)[0].decode()
    return status, time.perf_counter() - t0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_huge_bodies_are_refused_without_being_read(tmp_path, db_url, store, keys) -> None:
    with LiveServer(create_app(make_settings(tmp_path, db_url), store)) as server:
        huge = 300 * 1024 * 1024
        status, seconds = _raw_post(server.port, "/v1/inference/batch", huge, 64 * 1024, keys.viewer)
        assert " 413 " in status and seconds < 2.0
        status, seconds = _raw_post(server.port, "/v1/inference/batch", huge, 64 * 1024, None)
        assert " 413 " in status and seconds < 2.0
        # without a key a body under the limit is refused before it is read (401, not a wait for it)
        status, seconds = _raw_post(server.port, "/v1/inference/batch", 1_000_000, 10, None)
        assert " 401 " in status and seconds < 2.0


# ---- failed-login throttling ---------------------------------------------------------------------


@pytest.fixture
def throttled_client(tmp_path, db_url, store) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, db_url, USDCOP_AUTH_FAILURES_PER_MINUTE=5)
    with TestClient(create_app(settings, store)) as c:
        yield c


def test_failed_logins_are_throttled_per_client(throttled_client, keys) -> None:
    codes = [throttled_client.get("/api/models", headers={"X-API-Key": f"usdcop_guess{i:04d}xxxx"}).status_code
             for i in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
    r = throttled_client.get("/api/models", headers={"X-API-Key": "usdcop_another"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "failed logins" in r.json()["error"]["message"]
    # the edge applies the same throttle to requests with a body
    assert throttled_client.post("/v1/inference", json={}, headers={"X-API-Key": "usdcop_zzz"}).status_code == 429


def test_failed_logins_are_throttled_per_key_prefix(tmp_path, db_url, store, keys) -> None:
    from usdcop_platform.api.auth import Authenticator

    auth = Authenticator(failures_per_minute=3)
    prefix = keys.admin[:15]  # "usdcop_" + 8: shown in listings, so an attacker may know it
    results = [auth.authenticate(store, prefix + f"guess{i}", f"10.0.0.{i}").status for i in range(5)]
    assert results == [401, 401, 401, 429, 429]  # five addresses, one prefix
    assert auth.authenticate(store, "usdcop_otherpfx" + "x", "10.0.0.99").status == 401


def test_a_failed_lookup_writes_nothing(store, keys, monkeypatch) -> None:
    def no_write(*_a, **_k):
        raise AssertionError("a failed key lookup opened a write transaction")

    monkeypatch.setattr(store, "write_session", no_write)
    assert store.api_keys.verify(keys.viewer[:-1] + ("A" if keys.viewer[-1] != "A" else "B")) is None
    assert store.api_keys.verify("usdcop_" + "x" * 43) is None


def test_last_used_is_refreshed_at_most_once_a_minute(store, keys, monkeypatch) -> None:
    first = store.api_keys.verify(keys.viewer)
    assert first is not None and first.last_used_at is not None

    def no_write(*_a, **_k):
        raise AssertionError("refreshed last_used_at again within a minute")

    monkeypatch.setattr(store, "write_session", no_write)
    assert store.api_keys.verify(keys.viewer).name == "vera-viewer"


# ---- OPTIONS / 405 Allow, documented errors ------------------------------------------------------


def test_options_and_405_list_every_method_of_the_path(client, keys) -> None:
    r = client.options("/api/keys")
    assert r.status_code == 204 and r.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    r = client.options("/api/keys/somebody")
    assert r.status_code == 204 and "DELETE" in r.headers["Allow"] and "POST" not in r.headers["Allow"]
    r = client.patch("/api/keys", headers=keys.h("admin"), json={})
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_v1_errors_are_documented(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    v1 = {p: ops for p, ops in paths.items() if p.startswith("/v1/")}
    assert v1
    for path, ops in v1.items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"401", "403"} <= codes, (method, path, codes)
            if method == "post":
                assert {"400", "413", "422", "429"} <= codes, (method, path, codes)
                assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")


def test_failure_buckets_stay_bounded_under_random_guesses() -> None:
    from usdcop_platform.api.ratelimit import TokenBucketLimiter

    clock = [0.0]
    limiter = TokenBucketLimiter(per_minute=5, clock=lambda: clock[0], max_keys=50)
    for i in range(1000):  # every guess a new prefix: the table must not grow with them
        limiter.take(f"prefix:usdcop_{i:08d}")
        clock[0] += 0.001
    assert len(limiter._buckets) <= 50
    assert limiter.blocked_for("prefix:never-seen") == 0
    for _ in range(5):
        limiter.take("ip:10.0.0.1")
    assert limiter.blocked_for("ip:10.0.0.1") >= 1
    clock[0] += 60.0
    assert limiter.blocked_for("ip:10.0.0.1") == 0
