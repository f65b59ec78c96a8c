"""Bad macro files and bad configs end `usdcop ingest` with one clean line (issue 19)."""

from __future__ import annotations

import gzip
import shutil

from typer.testing import CliRunner

from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR
from usdcop_platform_tests.defs.test_future_bars import HEADER, PAST, _rows


def _ingest(*args: str):
    from usdcop_platform.cli import app

    return CliRunner().invoke(app, ["ingest", "--source", "file", *args])


def _bars(tmp_path, calendar):
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + _rows(calendar, PAST))
    return path


def _assert_one_line(output: str, expected: str) -> None:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1], output
    assert len(lines) <= 3, output
    assert "Traceback" not in output and "SourceError" not in output and "dagster" not in output.lower()


def test_non_numeric_macro_file(isolated_settings, tmp_path, calendar, real_macro_path) -> None:
    lines = gzip.open(real_macro_path, "rt").read().splitlines()[:300]
    header = lines[0].split(",")
    i = header.index(next(c for c in header if "dxy" in c))
    rows = [lines[0]] + [",".join(p[:i] + ["n/a"] + p[i + 1:]) for p in (ln.split(",") for ln in lines[1:])]
    macro = tmp_path / "macro.csv"
    macro.write_text("\n".join(rows) + "\n")
    out = _ingest("--bars", str(_bars(tmp_path, calendar)), "--macro", str(macro))
    assert out.exit_code == 1
    _assert_one_line(out.output, "macro.csv: non-numeric value 'n/a'")


def test_corrupt_macro_file(isolated_settings, tmp_path, calendar) -> None:
    macro = tmp_path / "macro.csv.gz"
    macro.write_bytes(b"\x1f\x8bnot really gzip" * 50)
    out = _ingest("--bars", str(_bars(tmp_path, calendar)), "--macro", str(macro))
    assert out.exit_code == 1
    _assert_one_line(out.output, "macro.csv.gz:")


def test_bad_config(isolated_settings, tmp_path, calendar, monkeypatch) -> None:
    from usdcop_platform.settings import get_settings

    cfg = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg)
    (cfg / "quality.yaml").write_text((cfg / "quality.yaml").read_text() + "\nbars: {}\n")
    monkeypatch.setenv("USDCOP_CONFIG_DIR", str(cfg))
    get_settings.cache_clear()
    out = _ingest("--bars", str(_bars(tmp_path, calendar)))
    assert out.exit_code == 1
    _assert_one_line(out.output, "quality.yaml: bars: duplicate key")
