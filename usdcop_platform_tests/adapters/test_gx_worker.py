"""The GX worker (adapters/expectations.start_gx_worker): validations run in a second
process give the same outcomes as in this one, and a dead worker falls back to this process."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pytest

from usdcop_platform.adapters import expectations


@pytest.fixture
def worker() -> Iterator[None]:
    assert expectations.start_gx_worker()
    try:
        yield
    finally:
        expectations.stop_gx_worker()


def _quarantine(rows: int) -> pl.DataFrame:
    return pl.DataFrame({"rule": ["spike"] * rows, "field": ["close"] * rows, "value": ["9.9"] * rows,
                         "partition": ["2024-01-02"] * rows},
                        schema={"rule": pl.Utf8, "field": pl.Utf8, "value": pl.Utf8, "partition": pl.Utf8})


def _macro_gate() -> pl.DataFrame:
    from datetime import date

    return pl.DataFrame({
        "date": [date(2024, 1, 2), date(2024, 1, 2), date(2024, 1, 3)],
        "variable": ["dxy", "dxy", "vix"],  # a duplicate (date, variable): macro_unique fails
        "value": [101.0, 101.5, 14.0],
        "available_date": [date(2024, 1, 3), date(2024, 1, 3), date(2024, 1, 3)],  # vix: not after its date
        "flagged": [False, False, False],
        "flag_reason": ["", "", ""],
        "range_lo": [80.0, 80.0, 5.0], "range_hi": [130.0, 130.0, 90.0],
        "max_jump_pct": [5.0, 5.0, 60.0], "jump_pct": [0.0, 0.5, 1.0],
    })


def test_the_worker_gives_the_same_outcomes_as_this_process(worker) -> None:
    assert expectations._worker is not None
    for frame in (_quarantine(0), _quarantine(2)):
        remote = expectations.validate_quarantine(frame)
        here = expectations.validate_quarantine.__wrapped__(frame)
        assert remote == here
    remote = expectations.validate_macro_rows(_macro_gate())
    assert remote == expectations.validate_macro_rows.__wrapped__(_macro_gate())
    assert not remote["macro_unique"].passed and not remote["macro_availability"].passed
    assert remote["macro_schema"].passed
    assert expectations._worker is not None  # still the worker's answers


def test_a_dead_worker_falls_back_to_this_process(worker, caplog) -> None:
    assert expectations._worker is not None
    expectations._worker._proc.kill()
    expectations._worker._proc.join()
    out = expectations.validate_quarantine(_quarantine(1))
    assert not out["bars_quarantine"].passed
    assert expectations._worker is None
    assert "validating in this process" in caplog.text
