"""Inline SVG charts and the display shaping of series (pure functions, no server)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from usdcop_platform.api import charts
from usdcop_platform.api.series import display_series, minmax_indices, monthly_returns
from usdcop_platform.api.comparison import METRIC_DISPLAY
from usdcop_platform.api.views import baseline_rows, criteria_rows, fmt_value, lineage_chain

SVG_NS = "{http://www.w3.org/2000/svg}"
BOGOTA = ZoneInfo("America/Bogota")
AXES = {"x_title": "Trading date", "y_title": "Equity (USD)"}


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(str(svg))  # well-formed XML or this raises


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    ticks = charts.nice_ticks(93_412.0, 101_877.0)
    assert ticks[0] <= 93_412.0 and ticks[-1] >= 101_877.0
    steps = {round(b - a, 6) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    step = steps.pop()
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert mantissa in (1, 2, 2.5, 5)
    assert charts.nice_ticks(5.0, 5.0)[0] < 5.0 < charts.nice_ticks(5.0, 5.0)[-1]  # flat series still gets an axis


def test_line_chart_is_valid_svg_with_a_path_through_every_point() -> None:
    values = [100.0, 101.0, 99.5, 102.0, 98.0]
    svg = charts.line_chart([f"d{i}" for i in range(5)], values, title="Equity", baseline=100.0, **AXES)
    root = _parse(svg)
    assert root.tag == f"{SVG_NS}svg"
    series = [p for p in root.iter(f"{SVG_NS}path") if p.get("class") == "series"]
    assert len(series) == 1
    assert series[0].get("d").count("L") == len(values) - 1
    assert root.find(f"{SVG_NS}title").text == "Equity"


def test_drawdown_area_is_closed_at_zero() -> None:
    svg = charts.line_chart(["a", "b", "c"], [0.0, -0.1, -0.05], title="DD", fill_to_zero=True, **AXES)
    area = [p for p in _parse(svg).iter(f"{SVG_NS}path") if p.get("class") == "area"]
    assert len(area) == 1 and area[0].get("d").endswith("Z")


def test_text_from_data_is_escaped() -> None:
    evil = '<script>alert(1)</script>"&'
    svg = str(charts.bar_chart([evil], [0.01], title=evil, x_title=evil, y_title="y"))
    assert "<script>" not in svg
    root = _parse(svg)
    assert root.find(f"{SVG_NS}title").text == evil


def test_histogram_counts_every_value_once() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(0, 100, 337)
    edges, counts = charts.histogram_bins(values)
    assert sum(counts) == 337
    assert edges[0] == pytest.approx(values.min()) and edges[-1] == pytest.approx(values.max())
    bars = [r for r in _parse(charts.histogram(values, title="PnL", **AXES)).iter(f"{SVG_NS}rect") if "bar" in (r.get("class") or "")]
    assert len(bars) == len(counts)
    assert {b.get("class") for b in bars} == {"bar pos", "bar neg"}


@pytest.mark.parametrize("values", [[], [float("nan")], [1.0]])
def test_charts_without_enough_data_say_so(values: list[float]) -> None:
    svg = str(charts.line_chart(["x"] * len(values), values, title="t", **AXES))
    assert "empty-chart" in svg and _parse(svg) is not None


def _texts(root: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for g in root.iter(f"{SVG_NS}g") if g.get("class") == cls for t in g.iter(f"{SVG_NS}text")]


def _axis_titles(root: ET.Element) -> dict[str, str]:
    return {t.get("class").split()[-1]: t.text for t in root.iter(f"{SVG_NS}text")
            if "axis-title" in (t.get("class") or "")}


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        ([-0.004, -0.003, -0.002, -0.001, 0.0], ["-0.4%", "-0.3%", "-0.2%", "-0.1%", "0.0%"]),
        ([-0.1, -0.05, 0.0], ["-10%", "-5%", "0%"]),
        ([0.0, 0.0025, 0.005], ["0.00%", "0.25%", "0.50%"]),
        ([-1e-17, 0.01], ["0%", "1%"]),  # float noise at zero is 0, never "-0"
    ],
)
def test_pct_ticks_use_the_precision_of_the_step_and_no_negative_zero(ticks, expected) -> None:
    fmt = charts.pct_ticks(ticks)
    assert [fmt(t) for t in ticks] == expected


def test_number_ticks_tell_every_tick_apart() -> None:
    ticks = charts.nice_ticks(99_990.0, 100_010.0)
    labels = [charts.number_ticks(ticks)(t) for t in ticks]
    assert len(set(labels)) == len(labels) and labels[0] == "99,990"
    half = [100_000.0, 100_000.5, 100_001.0]
    assert [charts.number_ticks(half)(t) for t in half] == ["100,000.0", "100,000.5", "100,001.0"]


@pytest.mark.parametrize("v", [-0.0, -1e-9, -0.000049])
def test_formatters_never_print_negative_zero(v: float) -> None:
    assert charts.fmt_pct(v) == "0.00%"
    assert charts.fixed(v * 100, 2) == "0.00"
    assert not fmt_value(v, "pct").startswith("-") and not fmt_value(v, "money").startswith("-")
    assert not charts.fmt_money(v).startswith("-")
    assert charts.fmt_number(-0.0) == "0"


def test_count_axis_ticks_are_whole_numbers() -> None:
    for hi in (1, 3, 7, 40):
        ticks = charts.nice_ticks(0, hi, integer=True)
        assert all(t == int(t) for t in ticks) and ticks[-1] >= hi
    root = _parse(charts.histogram([1.0, 2.0, 3.0], title="PnL", **AXES))
    labels = _texts(root, "axis y-axis")
    assert len(set(labels)) == len(labels), labels


def test_every_chart_titles_both_axes_with_their_units() -> None:
    made = [
        charts.line_chart(["a", "b"], [1.0, 2.0], title="t", x_title="Trading date", y_title="Equity (USD)"),
        charts.bar_chart(["2024-01"], [0.01], title="t", x_title="Month", y_title="Monthly return (%)"),
        charts.histogram([1.0, -2.0, 3.0], title="t", x_title="Net PnL per trade (USD)", y_title="Trades (count)"),
        charts.histogram([], title="t", x_title="Net PnL per trade (USD)", y_title="Trades (count)"),  # empty too
    ]
    for svg in made:
        titles = _axis_titles(_parse(svg))
        assert set(titles) == {"x-title", "y-title"} and all(titles.values()), titles
    with pytest.raises(TypeError):
        charts.line_chart(["a", "b"], [1.0, 2.0], title="t")  # axis titles are not optional


def test_legend_sits_above_the_plot_area_not_on_the_data() -> None:
    values = [100.0, 104.0, 99.0, 108.0]
    svg = charts.line_chart(
        ["a", "b", "c", "d"], values, title="Equity", baseline=100.0, baseline_label="initial capital",
        overlays={"buy & hold": [100.0, 101.0, 102.0, 101.0]}, frame=charts.WIDE_FRAME, **AXES,
    )
    root = _parse(svg)
    plot = next(r for r in root.iter(f"{SVG_NS}rect") if r.get("class") == "plot-bg")
    plot_top = float(plot.get("y"))
    legend = next(g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "legend")
    names = [t.text for t in legend.iter(f"{SVG_NS}text")]
    assert names == ["candidate", "buy & hold", "initial capital"]
    for el in legend:
        ys = [float(el.get(a)) for a in ("y", "y1", "y2") if el.get(a) is not None]
        assert ys and max(ys) < plot_top, (el.tag, ys, plot_top)
    xs = [float(t.get("x")) for t in legend.iter(f"{SVG_NS}text")]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # one row, left to right, no overlap
    single = _parse(charts.line_chart(["a", "b"], [1.0, 2.0], title="t", **AXES))
    assert not [g for g in single.iter(f"{SVG_NS}g") if g.get("class") == "legend"]  # one line needs no legend


def test_minmax_downsampling_keeps_every_extreme_and_the_cap() -> None:
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.normal(size=50_000))
    idx = minmax_indices(x, 2000)
    assert len(idx) <= 2000
    assert idx[0] == 0 and idx[-1] == x.size - 1
    assert x.argmin() in idx and x.argmax() in idx
    assert np.all(np.diff(idx) > 0)
    assert len(minmax_indices(x[:500], 2000)) == 500


def test_display_series_preserves_max_drawdown() -> None:
    rng = np.random.default_rng(3)
    equity = 100_000 * np.exp(np.cumsum(rng.normal(0, 0.001, 30_000)))
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1
    times = [datetime(2024, 1, 2, 13, tzinfo=timezone.utc) + timedelta(minutes=5 * i) for i in range(equity.size)]
    df = pl.DataFrame({"time": times, "equity": equity, "drawdown": dd})
    shown = display_series(df, 2000)
    assert shown.points <= 2000 and shown.total_points == 30_000
    assert min(shown.drawdown) == pytest.approx(dd.min())
    assert max(shown.equity) == pytest.approx(equity.max())
    assert shown.time == sorted(shown.time)


def test_monthly_returns_compound_to_the_total_return() -> None:
    sessions = [date(2024, 1, 30), date(2024, 1, 31), date(2024, 2, 1), date(2024, 3, 1)]
    equity = [100.0, 110.0, 99.0, 108.9]
    df = pl.DataFrame({"session": sessions, "equity": equity})
    months = monthly_returns(df, BOGOTA)
    assert [m for m, _ in months] == ["2024-01", "2024-02", "2024-03"]
    assert months[0][1] == pytest.approx(0.10)
    assert months[1][1] == pytest.approx(-0.10)
    assert np.prod([1 + r for _, r in months]) == pytest.approx(equity[-1] / equity[0])


def test_criteria_rows_from_core_promotion_format() -> None:
    crit = {
        "min_sharpe": {"name": "min_sharpe", "metric": "sharpe", "value": 0.71, "threshold": 0.5,
                       "comparator": ">=", "passed": True, "status": "PASS"},
        "max_drawdown": {"name": "max_drawdown", "metric": "max_drawdown", "value": 0.2, "threshold": 0.15,
                         "comparator": "<=", "passed": False, "status": "FAIL"},
    }
    rows = criteria_rows(crit)
    assert [r["status"] for r in rows] == ["PASS", "FAIL"]
    assert rows[1]["value_text"] == "20.00%" and rows[1]["threshold_text"] == "<= 15.00%"


def _full_metrics(**over: float) -> dict[str, float]:
    base = {"sharpe": 1.2, "sortino": 1.5, "total_return": 0.1, "annual_return": 0.2, "max_drawdown": 0.08,
            "win_rate": 0.55, "trades": 120, "profit_factor": 1.3, "avg_trade": 40.0, "exposure": 0.8,
            "turnover": 240.0, "psr": 0.97, "dsr": 0.9, "final_equity": 110_000.0}
    return {**base, **over}


def test_baseline_rows_fill_every_metric_for_production_and_keep_buy_and_hold() -> None:
    prod = _full_metrics(sharpe=0.9, max_drawdown=0.1, win_rate=0.5, trades=80, avg_trade=30.0, exposure=0.7,
                         turnover=300.0, psr=0.8, dsr=0.7, final_equity=104_000.0)
    bh = _full_metrics(sharpe=0.1, trades=1, win_rate=1.0, avg_trade=500.0, profit_factor=float("inf"),
                       exposure=1.0, turnover=2.0)
    proposal = {
        "metrics": {**_full_metrics(), "benchmarks": {"baseline": prod, "buy_and_hold": bh}},
        "baseline_comparison": {"baseline_model_id": "m-old", "deltas": {"sharpe": {"candidate": 1.2, "baseline": 0.9}}},
    }
    refs, rows = baseline_rows(proposal)
    assert [r.key for r in refs] == ["production", "buy_and_hold"] and refs[0].model_id == "m-old"
    assert len(rows) == len(METRIC_DISPLAY)
    by = {r["metric"]: {c["reference"]: c for c in r["cells"]} for r in rows}
    for key in ("exposure", "turnover", "psr", "dsr", "final_equity"):  # were "—" against a production model
        assert by[key]["production"]["value_text"] != "—", key
        assert by[key]["buy_and_hold"]["value_text"] != "—", key
    assert by["sharpe"]["production"]["delta_class"] == "pos"
    assert by["max_drawdown"]["production"]["delta_class"] == "pos"  # a smaller drawdown is better
    assert by["final_equity"]["production"]["delta_text"] == "+6,000.00"
    # per-trade statistics: compared with the production model's 80 trades, not with buy-and-hold's one
    assert by["avg_trade"]["production"]["delta_class"] == "pos"
    for key in ("avg_trade", "win_rate", "profit_factor"):
        assert by[key]["buy_and_hold"]["delta_class"] == "", key
    for key in ("trades", "exposure", "turnover"):  # how it trades, not how well
        assert by[key]["production"]["delta_class"] == by[key]["buy_and_hold"]["delta_class"] == ""
    assert fmt_value(float("inf")) == "∞"


def test_baseline_rows_without_production_compare_with_buy_and_hold_and_old_proposals_with_deltas() -> None:
    only_bh = {"metrics": {**_full_metrics(), "benchmarks": {"baseline": None, "buy_and_hold": _full_metrics()}},
               "baseline_comparison": {"baseline_model_id": None, "deltas": {}}}
    refs, rows = baseline_rows(only_bh)
    assert [r.key for r in refs] == ["buy_and_hold"]
    assert all(c["delta_text"] in ("0.000", "0.00%", "0", "0.00") for r in rows for c in r["cells"]), rows
    old = {"metrics": {"sharpe": 1.2}, "baseline_comparison": {
        "baseline_model_id": "m-old", "deltas": {"sharpe": {"candidate": 1.2, "baseline": 0.9, "delta": 0.3}}}}
    refs, rows = baseline_rows(old)
    assert [r.key for r in refs] == ["production"] and "headline metrics only" in refs[0].note
    assert rows[0]["cells"][0]["delta_text"] == "+0.300"


def test_lineage_chain_orders_dataset_model_backtest() -> None:
    h = "a" * 64
    chain = lineage_chain(
        {"lineage": {"dataset_hash": h, "backtest_hash": h, "extra_key": "x"}, "model_id": "m1"},
        {"model_hash": h, "mlflow_run_id": "run123"},
    )
    assert [n["title"] for n in chain] == ["Dataset", "Model", "Backtest", "Other"]
    model_items = dict((k, v) for k, v, _ in chain[1]["items"])
    assert model_items["model_hash"] == h and model_items["mlflow_run_id"] == "run123"
    assert all(is_hash for k, _, is_hash in chain[0]["items"] if k.endswith("_hash"))
    assert re.fullmatch(r"[0-9a-f]{64}", chain[2]["items"][0][1])
