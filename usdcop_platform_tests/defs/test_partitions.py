"""The session partitions are exactly the calendar's sessions."""

from __future__ import annotations

from datetime import date

from usdcop_platform.defs.partitions import CALENDAR, build_session_partitions


def test_partition_keys_equal_calendar_sessions() -> None:
    parts = build_session_partitions(CALENDAR, horizon_end=date(2026, 12, 31))
    keys = [k for k in parts.get_partition_keys() if k <= "2026-12-31"]
    expected = [d.isoformat() for d in CALENDAR.sessions(date(2020, 1, 1), date.fromisoformat(keys[-1]))]
    assert keys == expected
    assert "2024-03-25" not in keys and "2024-03-26" in keys
    assert "2026-07-13" not in keys or keys[-1] < "2026-07-13"
    per_year = sum(1 for k in keys if k.startswith("2023"))
    assert 240 <= per_year <= 250
    assert parts.timezone == "America/Bogota"
