"""The bounded chaos suite (issue 19): mixed API load while PostgreSQL connections are killed,
Redis goes away and comes back, and a model file is corrupted. No acknowledged write is lost,
no unexplained 500, and a rollback to the corrupted model is refused."""

from __future__ import annotations

import pytest

from usdcop_platform_tests.conftest import _need


@pytest.mark.slow
def test_chaos_loses_nothing(tmp_path) -> None:
    _need("PostgreSQL", "127.0.0.1", 5432)
    _need("Redis", "127.0.0.1", 6379)
    from usdcop_platform.bench.chaos import SCHEDULE, chaos

    report = chaos(duration_s=8.0, workers=3, root=tmp_path)
    assert report.total > 100 and report.acknowledged_writes > 20
    assert report.rows_lost == 0
    assert report.server_errors == 0, report.as_dict()
    assert set(report.outcomes) <= {"2xx", "503"} | {k for k in report.outcomes if k.startswith("exc:")}
    assert [e["fault"] for e in report.events] == [f for _, f in SCHEDULE]
    assert all(e["connections_killed"] > 0 for e in report.events if e["fault"] == "kill_postgres")
    rollback = next(e for e in report.events if e["fault"] == "corrupt_model_and_rollback")
    assert rollback["status"] == 409 and "refused" in rollback["message"]
    assert report.production_flips_on_corrupt_rollback == 0
