"""TwelveData and FRED clients against a local HTTP server answering like the vendors:
success, 429 (with and without Retry-After, and TwelveData's 200-with-error-body), 500, malformed
JSON, empty results and slow responses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import polars as pl
import pytest

from usdcop_platform.adapters.sources import FredMacroSource, HttpPolicy, SourceError, TwelveDataMarketSource
from usdcop_platform.adapters.sources.http import RateLimited, get_json

FAST = HttpPolicy(timeout_s=0.5, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05, max_retry_after_s=0.2)


@dataclass
class Reply:
    status: int = 200
    body: object = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Vendor:
    """A scripted server: each path pops its next Reply (the last one repeats)."""

    base_url: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    state = Vendor(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urlparse(self.path)
            state.requests.append((url.path, parse_qs(url.query)))
            queue = state.script.get(url.path) or [Reply(404, {"error": "no route"})]
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
            if reply.delay_s:
                time.sleep(reply.delay_s)
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def td_values(*rows: tuple[str, float]) -> dict:
    return {
        "meta": {"symbol": "USD/COP", "interval": "5min", "currency_base": "US Dollar",
                 "currency_quote": "Colombian Peso", "type": "Physical Currency"},
        "values": [{"datetime": t, "open": f"{c}", "high": f"{c + 1}", "low": f"{c - 1}", "close": f"{c}"}
                   for t, c in rows],
        "status": "ok",
    }


def twelvedata(vendor: Vendor, calendar) -> TwelveDataMarketSource:
    return TwelveDataMarketSource("secret-key", calendar, base_url=vendor.base_url, policy=FAST)


def fred(vendor: Vendor, platform_config) -> FredMacroSource:
    return FredMacroSource("fred-secret", platform_config.macro, base_url=vendor.base_url, policy=FAST)


# ---- TwelveData ----------------------------------------------------------------------------------
def test_twelvedata_bars(vendor, calendar):
    vendor.script["/time_series"] = [Reply(body=td_values(("2024-03-05 13:00:00", 3900.0), ("2024-03-05 13:05:00", 3901.5)))]
    df = twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))
    assert df.columns == ["time", "open", "high", "low", "close", "volume"]
    assert df["time"].to_list() == [datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc),
                                    datetime(2024, 3, 5, 13, 5, tzinfo=timezone.utc)]
    assert df["close"].to_list() == [3900.0, 3901.5] and df["volume"].to_list() == [0.0, 0.0]
    path, q = vendor.requests[0]
    assert q["symbol"] == ["USD/COP"] and q["interval"] == ["5min"] and q["timezone"] == ["UTC"]
    assert q["apikey"] == ["secret-key"] and q["start_date"] == ["2024-03-05 00:00:00"]


def test_twelvedata_long_ranges_are_chunked_under_the_output_limit(vendor, calendar):
    vendor.script["/time_series"] = [Reply(body=td_values())]
    src = twelvedata(vendor, calendar)
    src.bars(date(2024, 1, 1), date(2024, 2, 29))
    assert len(vendor.requests) == -(-60 // src.chunk_days)
    assert src.chunk_days * 24 * 12 <= 5000


def test_twelvedata_empty_result_is_an_empty_frame(vendor, calendar):
    no_data = {"code": 400, "message": "No data is available on the specified dates. Try setting different "
               "start/end dates.", "status": "error"}
    vendor.script["/time_series"] = [Reply(body=no_data)]
    df = twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))
    assert df.height == 0 and df.schema["time"] == pl.Datetime("us", "UTC")
    vendor.script["/time_series"] = [Reply(body=td_values())]
    assert twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5)).height == 0


def test_twelvedata_429_is_retried_then_succeeds(vendor, calendar):
    vendor.script["/time_series"] = [
        Reply(429, {"code": 429, "message": "You have run out of API credits", "status": "error"},
              headers={"Retry-After": "0.05"}),
        Reply(200, {"code": 429, "message": "API credits exceeded for the current minute", "status": "error"}),
        Reply(body=td_values(("2024-03-05 13:00:00", 3900.0))),
    ]
    df = twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))
    assert df.height == 1 and len(vendor.requests) == 3


def test_twelvedata_persistent_429_gives_a_clear_error_without_the_key(vendor, calendar):
    vendor.script["/time_series"] = [Reply(429, {"code": 429, "message": "slow down", "status": "error"})]
    with pytest.raises(RateLimited, match="HTTP 429 rate limited; gave up after 3 attempts") as exc:
        twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))
    assert "secret-key" not in str(exc.value) and "***" in str(exc.value)
    assert len(vendor.requests) == 3


def test_twelvedata_500_is_retried_and_reported(vendor, calendar):
    vendor.script["/time_series"] = [Reply(500, {"message": "internal"}), Reply(body=td_values(("2024-03-05 13:00:00", 1.0)))]
    assert twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5)).height == 1
    vendor.requests.clear()
    vendor.script["/time_series"] = [Reply(503, {"message": "unavailable"})]
    with pytest.raises(SourceError, match="HTTP 503 server error; gave up after 3 attempts"):
        twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))


def test_twelvedata_timeout(vendor, calendar):
    vendor.script["/time_series"] = [Reply(body=td_values(), delay_s=1.0)]
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match=r"timed out after 0.5 s; gave up after 3 attempts"):
        twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))
    assert time.perf_counter() - t0 < 5


def test_twelvedata_malformed_json_and_shapes(vendor, calendar):
    vendor.script["/time_series"] = [Reply(body=b'{"values": [{"datetime": "2024-03-05 13:00:00", "open": ')]
    with pytest.raises(SourceError, match="malformed JSON"):
        twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))
    assert len(vendor.requests) == 1  # not retried
    for body, msg in [([1, 2], "expected an object"), ({"status": "ok"}, "no 'values'"),
                      ({"values": [{"datetime": "2024-03-05 13:00:00", "open": "x", "high": "1", "low": "1",
                                    "close": "1"}]}, "non-numeric open"),
                      ({"code": 401, "message": "invalid api key", "status": "error"}, "error 401: invalid api key")]:
        vendor.script["/time_series"] = [Reply(body=body)]
        with pytest.raises(SourceError, match=msg):
            twelvedata(vendor, calendar).bars(date(2024, 3, 5), date(2024, 3, 5))


def test_twelvedata_latest_closed_bar(vendor, calendar):
    vendor.script["/time_series"] = [Reply(body=td_values(("2024-03-05 13:10:00", 3.0), ("2024-03-05 13:05:00", 2.0),
                                                          ("2024-03-05 13:00:00", 1.0)))]
    now = datetime(2024, 3, 5, 13, 12, tzinfo=timezone.utc)  # the 13:10 bar is still forming
    latest = twelvedata(vendor, calendar).latest_bar(now)
    assert latest["time"].to_list() == [datetime(2024, 3, 5, 13, 5, tzinfo=timezone.utc)]
    assert vendor.requests[0][1]["outputsize"] == ["3"]


# ---- FRED ----------------------------------------------------------------------------------------
def fred_obs(*rows: tuple[str, str]) -> dict:
    return {"realtime_start": "2024-03-05", "realtime_end": "2024-03-05", "observation_start": "2024-01-01",
            "observation_end": "2024-01-31", "units": "lin", "count": len(rows),
            "observations": [{"realtime_start": "2024-03-05", "realtime_end": "2024-03-05", "date": d, "value": v}
                             for d, v in rows]}


def test_fred_values_for_every_fred_variable(vendor, platform_config):
    vendor.script["/fred/series/observations"] = [Reply(body=fred_obs(("2024-01-02", "3.95"), ("2024-01-03", ".")))]
    wide = fred(vendor, platform_config).values(date(2024, 1, 1), date(2024, 1, 31))
    fred_vars = {v.column for v in platform_config.macro.variables.values() if v.fred_series}
    assert set(wide.columns) == {"date", *fred_vars}
    assert wide["date"].to_list() == [date(2024, 1, 2), date(2024, 1, 3)]
    assert all(wide[c].to_list() == [3.95, None] for c in fred_vars)
    series = sorted(q["series_id"][0] for _, q in vendor.requests)
    assert series == sorted(v.fred_series for v in platform_config.macro.variables.values() if v.fred_series)
    q = vendor.requests[0][1]
    assert q["file_type"] == ["json"] and q["observation_start"] == ["2024-01-01"] and q["api_key"] == ["fred-secret"]


def test_fred_errors(vendor, platform_config):
    src = fred(vendor, platform_config)
    vendor.script["/fred/series/observations"] = [Reply(400, {"error_code": 400, "error_message": "Bad Request. "
                                                              "The series does not exist."})]
    with pytest.raises(SourceError, match="HTTP 400") as exc:
        src.series("NOPE", date(2024, 1, 1), date(2024, 1, 31))
    assert "fred-secret" not in str(exc.value)
    vendor.script["/fred/series/observations"] = [Reply(body={"error_code": 500, "error_message": "oops"})]
    with pytest.raises(SourceError, match="error 500: oops"):
        src.series("DGS10", date(2024, 1, 1), date(2024, 1, 31))
    vendor.script["/fred/series/observations"] = [Reply(body=b"<html>not json</html>")]
    with pytest.raises(SourceError, match="malformed JSON"):
        src.series("DGS10", date(2024, 1, 1), date(2024, 1, 31))
    vendor.script["/fred/series/observations"] = [Reply(body=fred_obs(("2024-01-02", "abc")))]
    with pytest.raises(SourceError, match="non-numeric value 'abc'"):
        src.series("DGS10", date(2024, 1, 1), date(2024, 1, 31))
    vendor.script["/fred/series/observations"] = [Reply(body=fred_obs())]
    assert src.series("DGS10", date(2024, 1, 1), date(2024, 1, 31)).height == 0


def test_fred_429_then_ok(vendor, platform_config):
    vendor.script["/fred/series/observations"] = [Reply(429, {"error_code": 429, "error_message": "Too Many Requests"}),
                                                  Reply(body=fred_obs(("2024-01-02", "16.1")))]
    s = fred(vendor, platform_config).series("VIXCLS", date(2024, 1, 1), date(2024, 1, 31))
    assert s["value"].to_list() == [16.1]


# ---- the retry policy itself ---------------------------------------------------------------------
def test_backoff_and_retry_after_are_honoured(vendor):
    waits: list[float] = []
    vendor.script["/x"] = [Reply(429, {}, headers={"Retry-After": "7"}), Reply(500, {}), Reply(429, {}), Reply(body={"ok": 1})]
    policy = HttpPolicy(timeout_s=1, max_attempts=4, backoff_base_s=0.5, backoff_max_s=30, max_retry_after_s=5)
    with httpx.Client() as client:
        body = get_json(client, f"{vendor.base_url}/x", {}, policy, vendor="test", sleep=waits.append)
    assert body == {"ok": 1}
    assert waits == [5.0, 1.0, 2.0]  # Retry-After capped at 5; then 0.5 * 2^(k-1)


def test_connection_refused_is_a_source_error():
    with httpx.Client() as client, pytest.raises(SourceError, match="connection error"):
        get_json(client, "http://127.0.0.1:9/x", {}, FAST, vendor="test", sleep=lambda _s: None)
