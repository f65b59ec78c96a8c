"""Macro quality rules that don't blind the model (issue 17): a confirmed level shift is re-accepted,
jump limits follow recent volatility, a slow slide out of the historical band is flagged.
Synthetic series and the real macro file (2020 COVID, the 1998 EMBI break)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from usdcop_platform.contracts.macro import MacroRules
from usdcop_platform.core.cleaning import clean_macro_long, macro_long
from usdcop_platform.core.features import macro_daily_frame
from usdcop_platform.core.quality import flag_macro, flag_series

OLD = {"level_confirm_values": 10**6, "jump_vol_window": 10**6, "band_min_history": 10**6, "band_window": 10**6}


def _long(values, variable: str = "dxy") -> pl.DataFrame:
    d0 = date(2010, 1, 1)
    rows = [(d0 + timedelta(days=i), variable, float(v), d0 + timedelta(days=i + 1)) for i, v in enumerate(values)]
    return pl.DataFrame(rows, schema={"date": pl.Date, "variable": pl.Utf8, "value": pl.Float64,
                                       "available_date": pl.Date}, orient="row")


def _with_rules(ssot, **rules):
    return ssot.model_copy(update={"rules": ssot.rules.model_copy(update=rules)})


def _calm(n: int, level: float, daily_pct: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level * np.exp(np.cumsum(rng.normal(0, daily_pct / 100, n)))


# ---- level shifts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_confirm", [2, 3, 5])
def test_a_synthetic_level_shift_is_reaccepted_after_n_values(platform_config, n_confirm):
    ssot = _with_rules(platform_config.macro, level_confirm_values=n_confirm)
    vals = np.r_[_calm(30, 100, 0.2), _calm(60, 106, 0.2, seed=1)]  # +6% (dxy limit 3%) and it stays
    reasons = flag_macro(_long(vals), ssot)["flag_reason"].to_list()
    assert reasons[:30] == [None] * 30
    assert reasons[30:30 + n_confirm - 1] == ["jump"] + ["level_break"] * (n_confirm - 2)
    assert reasons[30 + n_confirm - 1:] == [None] * (60 - n_confirm + 1)


def test_the_old_rule_flagged_a_level_shift_forever(platform_config):
    vals = np.r_[_calm(30, 100, 0.2), _calm(60, 106, 0.2, seed=1)]
    reasons = flag_macro(_long(vals), _with_rules(platform_config.macro, **OLD))["flag_reason"].to_list()
    assert reasons[30:] == ["jump"] + ["level_break"] * 59  # what issue 17 reports


def test_a_bad_print_that_reverts_stays_flagged_and_the_series_resumes(platform_config):
    vals = _calm(40, 100, 0.2)
    vals[20] *= 1.2
    f = flag_macro(_long(vals), platform_config.macro)
    assert f.filter(pl.col("flagged"))["flag_reason"].to_list() == ["jump"]
    assert f["flagged"].arg_max() == 20


def test_flag_series_is_causal(platform_config):
    """A value's flag depends only on the values up to it: live (one more value) flags like batch."""
    var, rules = platform_config.macro.variables["dxy"], platform_config.macro.rules
    vals = np.r_[_calm(300, 100, 0.3), _calm(50, 106, 1.5, seed=2), _calm(30, 80, 0.3, seed=3)]
    full = flag_series(vals, var, rules)
    for k in (301, 303, 330, 351, 352, 380):
        assert flag_series(vals[:k], var, rules).reasons == full.reasons[:k]


# ---- volatility-aware jumps --------------------------------------------------------------------------
def test_the_jump_limit_follows_recent_volatility(platform_config):
    ssot = platform_config.macro  # dxy floor 3%, k=6 std of the last 10 accepted moves
    calm = np.r_[_calm(30, 100, 0.2), 0.0]
    calm[-1] = calm[-2] * 1.08  # an 8% move in a calm market: a bad print
    assert flag_macro(_long(calm), ssot)["flag_reason"][-1] == "jump"
    moves = np.r_[np.ones(20), np.tile([1.025, 0.975], 5), 1.08]  # 2.5% daily swings, then 8%
    stormy = 100 * np.cumprod(moves)
    f = flag_macro(_long(stormy), ssot)
    assert f["flag_reason"][-1] is None and f["jump_limit_pct"][-1] > 8.0


def test_covid_2020_moves_are_kept(platform_config, real_macro_path):
    ssot = platform_config.macro
    raw = pl.read_csv(real_macro_path, try_parse_dates=True, infer_schema_length=10000).rename({"fecha": "date"})
    long, _ = macro_long(raw, ssot)
    f = flag_macro(long, ssot)

    def flags(var: str, a: date, b: date, rules=f) -> list:
        return rules.filter((pl.col("variable") == var) & pl.col("date").is_between(a, b))["flag_reason"].to_list()

    old = flag_macro(long, _with_rules(ssot, **OLD))
    assert flags("ust10y", date(2020, 3, 10), date(2020, 3, 26), old).count(None) == 0  # the old rule's 12 flags
    assert flags("embi_col", date(2020, 3, 9), date(2020, 3, 9), old) == ["jump"]
    ust = flags("ust10y", date(2020, 3, 10), date(2020, 3, 26))
    assert len(ust) == 12 and ust == [None] * 12
    assert flags("embi_col", date(2020, 3, 9), date(2020, 3, 9)) == [None]
    # nothing else in 1983-2024 is flagged but the 2002 EMBI values above its hard range
    other = f.filter(pl.col("flagged") & ~((pl.col("variable") == "embi_col") & (pl.col("flag_reason") == "out_of_range")))
    assert other.height == 0


def test_the_real_1998_embi_break_is_reaccepted_and_features_stay_alive(platform_config, calendar, real_macro_path):
    """The real level break in the file (EMBI, Aug 1998: the old rule flagged 56 values over 2.5
    months). With the volatility widening off, the confirmation rule alone re-accepts the new level
    after 2 flagged values, so the 5-day forward fill bridges it and embi_z is never missing."""
    ssot = platform_config.macro
    raw = pl.read_csv(real_macro_path, try_parse_dates=True, infer_schema_length=10000).rename({"fecha": "date"})
    long, _ = macro_long(raw, ssot)
    long = long.filter(pl.col("date").is_between(date(1996, 1, 1), date(1999, 6, 30)))
    no_vol = {"jump_vol_window": 10**6, "band_min_history": 10**6, "band_window": 10**6}
    a, b = date(1998, 8, 21), date(1998, 12, 31)

    def embi(ssot_) -> tuple[pl.DataFrame, pl.DataFrame]:
        flagged = clean_macro_long(long, ssot_).frame
        z = macro_daily_frame(flagged, platform_config.features, calendar, ssot_, date(1999, 6, 30))
        return (flagged.filter((pl.col("variable") == "embi_col") & pl.col("date").is_between(a, b)),
                z.filter(pl.col("date").is_between(a, b)))

    old_flags, old_z = embi(_with_rules(ssot, **OLD))
    new_flags, new_z = embi(_with_rules(ssot, **no_vol))
    assert old_flags["flagged"].sum() == 56 and old_z["embi_z"].null_count() > 50
    jumps = new_flags.filter(pl.col("flagged") & (pl.col("flag_reason") != "out_of_range"))  # > 1000 bps stays out
    assert jumps["flag_reason"].to_list() == ["jump", "level_break"]
    assert new_z["embi_z"].null_count() == 0 and new_z.height > 90


# ---- the historical band -----------------------------------------------------------------------------
def _brent_slide(regime_days: int = 0) -> np.ndarray:
    history = _calm(800, 75, 1.5)  # 3 years between ~52 and ~89, ending at ~55
    slide = history[-1] * np.exp(np.linspace(0, np.log(20 / history[-1]), 41)[1:])  # ~-2.5% a day to 20
    return np.r_[history, slide, 20 * _calm(regime_days, 1.0, 1.0, seed=4)]


def test_a_slow_brent_slide_to_20_is_flagged(platform_config):
    ssot = platform_config.macro  # brent: hard range [5, 200], max jump 40%: [5, 200] alone passes 20
    f = flag_macro(_long(_brent_slide(), variable="brent"), ssot)
    assert f["flag_reason"].head(800).null_count() == 800  # no false alarm in 3 years of history
    tail = f.tail(40)
    assert set(tail["flag_reason"].drop_nulls()) == {"out_of_band"}  # no single day is a jump
    # values under their band are flagged, the others not; the band of accepted values barely moves
    assert (tail["flagged"] == (tail["value"] < tail["band_lo"])).all()
    assert tail["band_lo"].min() > 25 and tail["flagged"].sum() >= 10
    assert tail["value"][-1] == pytest.approx(20) and tail["flagged"][-1]
    old = flag_macro(_long(_brent_slide(), variable="brent"), _with_rules(ssot, **OLD))
    assert not old["flagged"].any()  # the old rules passed the whole slide


def test_a_lasting_regime_outside_the_band_is_reaccepted(platform_config):
    ssot = platform_config.macro  # band_confirm_values: 20
    f = flag_macro(_long(_brent_slide(regime_days=40), variable="brent"), ssot)
    flagged = f.with_row_index().filter(pl.col("flagged"))
    assert flagged.height == ssot.rules.band_confirm_values - 1 and set(flagged["flag_reason"]) == {"out_of_band"}
    assert not f.tail(f.height - int(flagged["index"].max()) - 1)["flagged"].any()  # the model sees it again


def test_the_band_reports_in_quarantine(platform_config):
    r = clean_macro_long(_long(_brent_slide(), variable="brent"), platform_config.macro)
    q = r.quarantined.filter(pl.col("rule") == "out_of_band")
    assert q.height > 0 and q["value"].str.contains("outside its historical band").all()


def test_rules_are_validated():
    with pytest.raises(ValueError, match="level_confirm_values"):
        MacroRules(level_confirm_values=1)


# ---- operator acceptance -----------------------------------------------------------------------------
def test_an_operator_accepts_a_new_level_at_once(platform_config):
    ssot = _with_rules(platform_config.macro, level_confirm_values=5)
    vals = np.r_[_calm(30, 100, 0.2), _calm(10, 106, 0.2, seed=1)]
    long = _long(vals)
    assert flag_macro(long, ssot)["flag_reason"].to_list()[30:34] == ["jump"] + ["level_break"] * 3
    first = long["date"][30]
    f = flag_macro(long, ssot, pl.DataFrame({"variable": ["dxy"], "date": [first]}))
    assert f["flag_reason"].to_list()[30:] == [None] * 10  # accepted, and the reference from there on


def test_an_operator_accepts_a_regime_outside_the_band(platform_config):
    ssot = platform_config.macro
    vals = _brent_slide()
    long = _long(vals, variable="brent")
    f = flag_macro(long, ssot)
    first_bad = f.filter(pl.col("flagged"))["date"][0]
    g = flag_macro(long, ssot, pl.DataFrame({"variable": ["brent"], "date": [first_bad]}))
    assert not g.filter(pl.col("date") >= first_bad)["flagged"].any()  # the band restarts from it
    out = pl.DataFrame({"variable": ["brent"], "date": [long["date"][0]]})
    assert flag_macro(long.with_columns(pl.lit(500.0).alias("value")), ssot, out)["flag_reason"][0] == "out_of_range"
