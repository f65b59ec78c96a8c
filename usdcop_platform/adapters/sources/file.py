"""File source: CSV, CSV.gz and parquet exports (the real files in ../shared/data load unchanged).

Readers raise SourceError with the file name and a precise reason for: a missing or empty file,
a truncated gzip stream, missing columns, non-numeric prices, unparseable or naive timestamps.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

import polars as pl

from usdcop_platform.adapters.sources.base import (
    SourceError,
    newest_closed,
    slice_by_utc_date,
)
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import UTC_TIME

PRICE_COLUMNS = ("open", "high", "low", "close")
TIME_ALIASES = ("time", "datetime", "timestamp")
DATE_ALIASES = ("date", "fecha")
# An explicit UTC offset (or Z) at the end of a timestamp string.
_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise SourceError(f"{path}: truncated or corrupt gzip stream ({exc})") from exc
    if not raw.strip():
        raise SourceError(f"{path}: file is empty")
    return raw


def _is_parquet(path: Path) -> bool:
    return path.suffix in (".parquet", ".pq")


def _read_table(path: Path) -> pl.DataFrame:
    """Every column as text (CSV) or as stored (parquet); no rows is an error."""
    path = Path(path)
    if _is_parquet(path):
        if not path.exists():
            raise SourceError(f"{path}: file not found")
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for corrupt parquet
            raise SourceError(f"{path}: unreadable parquet ({exc})") from exc
    else:
        data = _read_bytes(path)
        try:
            df = pl.read_csv(io.BytesIO(data), infer_schema=False)
        except pl.exceptions.PolarsError as exc:
            raise SourceError(f"{path}: malformed CSV ({exc})") from exc
    if df.height == 0:
        raise SourceError(f"{path}: no data rows (header only)")
    return df.rename({c: c.strip().lower() for c in df.columns})


def _pick(df: pl.DataFrame, aliases: tuple[str, ...], path: Path, what: str) -> str:
    for a in aliases:
        if a in df.columns:
            return a
    raise SourceError(f"{path}: missing {what} column (one of {list(aliases)}); found {df.columns}")


def _numeric(df: pl.DataFrame, cols: list[str], path: Path) -> pl.DataFrame:
    """Cast columns to Float64; a non-empty value that is not a number is an error naming row and value."""
    out = []
    for c in cols:
        s = df[c]
        if s.dtype.is_numeric():
            out.append(s.cast(pl.Float64))
            continue
        text = s.cast(pl.Utf8).str.strip_chars()
        num = text.cast(pl.Float64, strict=False)
        bad = (num.is_null() & text.is_not_null() & (text != "")).arg_true()
        if bad.len():
            i = int(bad[0])
            raise SourceError(
                f"{path}: non-numeric value {text[i]!r} in column {c!r} at data row {i + 1} "
                f"({bad.len()} such value(s))"
            )
        out.append(num)
    return df.with_columns(out)


def _parse_instants(s: pl.Series, path: Path) -> pl.Series:
    """Timestamps with an explicit offset -> UTC Datetime[us]; naive ones are refused."""
    if isinstance(s.dtype, pl.Datetime):
        if s.dtype.time_zone is None:
            raise SourceError(f"{path}: column {s.name!r} holds naive timestamps; they must carry a UTC offset")
        return s.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    text = s.cast(pl.Utf8).str.strip_chars()
    if text.null_count():
        i = int(text.is_null().arg_true()[0])
        raise SourceError(f"{path}: empty timestamp in column {s.name!r} at data row {i + 1}")
    naive = ~text.str.contains(_OFFSET.pattern)
    if naive.any():
        i = int(naive.arg_true()[0])
        raise SourceError(
            f"{path}: naive timestamp {text[i]!r} in column {s.name!r} at data row {i + 1} "
            f"({int(naive.sum())} such); timestamps must carry a UTC offset such as +00:00"
        )
    norm = text.str.replace("T", " ").str.replace(r"Z$", "+00:00")
    parsed = norm.str.to_datetime("%Y-%m-%d %H:%M:%S%.f%z", time_unit="us", time_zone="UTC", strict=False)
    bad = parsed.is_null().arg_true()
    if bad.len():
        i = int(bad[0])
        raise SourceError(f"{path}: unparseable timestamp {text[i]!r} in column {s.name!r} at data row {i + 1}")
    return parsed.alias(s.name)


def read_bars_file(path: Path | str) -> pl.DataFrame:
    """Raw bars from a CSV / CSV.gz / parquet export: time (UTC), open, high, low, close, volume
    (0 when absent) and `source` when the file has it. No cleaning happens here."""
    path = Path(path)
    df = _read_table(path)
    tcol = _pick(df, TIME_ALIASES, path, "timestamp")
    missing = [c for c in PRICE_COLUMNS if c not in df.columns]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing}; found {df.columns}")
    numeric = [*PRICE_COLUMNS, *(["volume"] if "volume" in df.columns else [])]
    df = _numeric(df, numeric, path)
    out = df.select(
        _parse_instants(df[tcol], path).alias("time"),
        *[pl.col(c) for c in PRICE_COLUMNS],
        (pl.col("volume") if "volume" in df.columns else pl.lit(0.0)).cast(pl.Float64).alias("volume"),
        *([pl.col("source").cast(pl.Utf8)] if "source" in df.columns else []),
    )
    return out.with_columns(pl.col("time").cast(UTC_TIME))


def read_macro_file(path: Path | str, required_columns: list[str] | None = None) -> pl.DataFrame:
    """Wide daily macro from a CSV / CSV.gz / parquet export: `date` (from `fecha` or `date`) plus every
    column in `required_columns` (or, when None, every column that is entirely numeric) as Float64."""
    path = Path(path)
    df = _read_table(path)
    dcol = _pick(df, DATE_ALIASES, path, "date")
    if required_columns is not None:
        wanted = [c.lower() for c in required_columns]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise SourceError(f"{path}: missing macro column(s) {missing}")
    else:
        wanted = [c for c in df.columns if c != dcol and _all_numeric(df[c])]
    df = _numeric(df, wanted, path)
    d = df[dcol]
    if d.dtype == pl.Date:
        dates = d
    elif isinstance(d.dtype, pl.Datetime):
        dates = d.dt.date()
    else:
        text = d.cast(pl.Utf8).str.strip_chars()
        dates = text.str.to_date("%Y-%m-%d", strict=False)
        bad = dates.is_null().arg_true()
        if bad.len():
            i = int(bad[0])
            raise SourceError(f"{path}: unparseable date {text[i]!r} in column {dcol!r} at data row {i + 1}")
    return df.select(dates.alias("date"), *[pl.col(c) for c in wanted]).sort("date")


def _all_numeric(s: pl.Series) -> bool:
    if s.dtype.is_numeric():
        return True
    text = s.cast(pl.Utf8).str.strip_chars()
    nonempty = text.is_not_null() & (text != "")
    return bool(nonempty.any()) and bool(text.filter(nonempty).cast(pl.Float64, strict=False).is_not_null().all())


@lru_cache(maxsize=4)
def _cached_bars(path: str, mtime_ns: int, size: int) -> pl.DataFrame:
    return read_bars_file(path)


@lru_cache(maxsize=4)
def _cached_macro(path: str, mtime_ns: int, size: int, columns: tuple[str, ...]) -> pl.DataFrame:
    return read_macro_file(path, list(columns))


def _stat(path: Path) -> tuple[int, int]:
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class FileMarketSource:
    """Bars from an export file, read once per process (re-read when the file changes)."""

    name = "file"

    def __init__(self, path: Path | str, calendar: TradingCalendar) -> None:
        self.path = Path(path)
        self.calendar = calendar

    def frame(self) -> pl.DataFrame:
        return _cached_bars(str(self.path), *_stat(self.path))

    def bars(self, start: date, end: date) -> pl.DataFrame:
        return slice_by_utc_date(self.frame(), start, end)

    def latest_bar(self, now: datetime) -> pl.DataFrame:
        return newest_closed(self.bars(now.date(), now.date()), self.calendar, now)

    def date_span(self, as_of: date | None = None) -> tuple[date, date]:
        """First and last UTC date of the file's bars; with `as_of` (today), of the bars not dated
        after it: future-dated rows (a wrong clock) are quarantined by the ingest, and must not
        widen its range. Raises SourceError when every bar is in the future."""
        frame = self.frame()
        if as_of is not None:
            from usdcop_platform.core.cleaning import future_bars

            future = future_bars(frame, self.calendar, as_of)
            if future.height == frame.height and frame.height:
                raise SourceError(
                    f"{self.path}: all {frame.height:,} bars are dated after today ({as_of}), from "
                    f"{future['time'].min():%Y-%m-%d %H:%M}Z; future-dated rows are never ingested (check the export's clock)"
                )
            if future.height:
                frame = frame.filter(self.calendar.session_expr() <= as_of)
        if frame.is_empty():
            raise SourceError(f"{self.path}: the file holds no bars")
        t = frame["time"]
        return t.min().date(), t.max().date()  # type: ignore[union-attr]

    def future_bars(self, as_of: date) -> pl.DataFrame:
        """The file's bars dated (instrument-local) after `as_of`."""
        from usdcop_platform.core.cleaning import future_bars

        return future_bars(self.frame(), self.calendar, as_of)


class FileMacroSource:
    """Macro values of the SSOT variables from a wide export file."""

    name = "file"

    def __init__(self, path: Path | str, columns: list[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)

    def values(self, start: date, end: date) -> pl.DataFrame:
        df = _cached_macro(str(self.path), *_stat(self.path), self.columns)
        return df.filter((pl.col("date") >= start) & (pl.col("date") <= end))
