"""Trading calendar on real dates 2020-2026."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import pytest

UTC = timezone.utc


@pytest.mark.parametrize(
    "day, is_session, why",
    [
        (date(2024, 3, 25), False, "Saint Joseph moved to Monday (Ley Emiliani)"),
        (date(2024, 3, 19), True, "the original Saint Joseph date is a normal Tuesday"),
        (date(2024, 3, 28), False, "Maundy Thursday (Easter-based)"),
        (date(2024, 3, 29), False, "Good Friday (Easter-based)"),
        (date(2023, 6, 12), False, "Corpus Christi (Easter-based, moved to Monday)"),
        (date(2020, 1, 6), False, "Epiphany 2020 falls on a Monday"),
        (date(2026, 7, 13), False, "2026 addition: Our Lady of Chiquinquira (observed)"),
        (date(2024, 7, 20), False, "Saturday (and Independence Day)"),
        (date(2024, 6, 2), False, "Sunday"),
        (date(2024, 6, 5), True, "a normal Wednesday"),
        (date(2024, 1, 15), True, "MLK day: a US holiday, still a COP session"),
    ],
)
def test_sessions_on_real_dates(calendar, day: date, is_session: bool, why: str) -> None:
    assert calendar.is_session(day) is is_session, why


def test_session_grid_is_60_utc_bars(calendar) -> None:
    grid = calendar.session_grid_utc(date(2024, 6, 5))
    assert len(grid) == 60
    assert grid[0] == datetime(2024, 6, 5, 13, 0, tzinfo=UTC)
    assert grid[-1] == datetime(2024, 6, 5, 17, 55, tzinfo=UTC)
    assert all(calendar.bar_index(t) == i for i, t in enumerate(grid))


def test_is_open_and_grid_membership(calendar) -> None:
    assert calendar.is_open(datetime(2024, 6, 5, 13, 0, tzinfo=UTC))
    assert calendar.is_open(datetime(2024, 6, 5, 17, 59, tzinfo=UTC))
    assert not calendar.is_open(datetime(2024, 6, 5, 18, 0, tzinfo=UTC))
    assert not calendar.is_open(datetime(2024, 6, 5, 12, 59, tzinfo=UTC))
    assert not calendar.is_open(datetime(2024, 3, 25, 15, 0, tzinfo=UTC))  # holiday
    assert not calendar.is_on_grid(datetime(2024, 6, 5, 8, 0, tzinfo=UTC))  # 03:00 Bogota
    assert not calendar.is_on_grid(datetime(2024, 6, 5, 13, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="naive"):
        calendar.is_open(datetime(2024, 6, 5, 13, 0))


def test_next_and_previous_session_skip_weekends_and_holidays(calendar) -> None:
    assert calendar.next_session(date(2024, 3, 22)) == date(2024, 3, 26)  # Fri -> Tue (Mon holiday)
    assert calendar.previous_session(date(2024, 4, 1)) == date(2024, 3, 27)  # Easter week
    assert calendar.sessions(date(2024, 3, 23), date(2024, 3, 31)) == [date(2024, 3, 26), date(2024, 3, 27)]


def test_last_closed_bar(calendar) -> None:
    now = datetime(2024, 6, 5, 13, 12, tzinfo=UTC)
    assert calendar.last_closed_bar(now) == datetime(2024, 6, 5, 13, 5, tzinfo=UTC)
    assert calendar.last_closed_bar(datetime(2024, 6, 5, 12, 0, tzinfo=UTC)) is None
    assert calendar.last_closed_bar(datetime(2024, 6, 8, 15, 0, tzinfo=UTC)) is None  # Saturday


def test_annualization_comes_from_the_calendar(calendar) -> None:
    spy = calendar.sessions_per_year()
    assert 240 < spy < 250
    assert calendar.bars_per_year() == pytest.approx(spy * 60)
    assert 119 < math.sqrt(calendar.bars_per_year()) < 123
    assert not hasattr(calendar, "annualization_factor")  # the factors are core.metrics.Annualization's
