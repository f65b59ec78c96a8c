"""evaluation/backtest and evaluation/promotion_proposal with materialize_to_memory.

Real pieces throughout: a dataset built by core.datasets in a temp lake, real ONNX policies run by
onnxruntime, the SQLite store migrated by Alembic. The synthetic market trends within each half
session and a leaked feature tells the policy the direction, so a policy that reads it is
profitable enough to pass every criterion (PROMOTE), and a copy of it is a baseline it cannot beat
(REVIEW).
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import yaml

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store import get_store
from usdcop_platform.defs.resources import MlflowResource
from usdcop_platform.bench.backtest import mlp_policy_onnx
from usdcop_platform.contracts.base import file_hash, sha256_hex
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, load_platform_config
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import UTC_TIME
from usdcop_platform.defs.evaluation.assets import backtest, promotion_proposal
from usdcop_platform.defs.evaluation.definitions import defs as evaluation_defs
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform_tests.training_synth import fresh_mlflow_uri

EXPERIMENT = "smoke"
SIGNAL = "log_ret_5m"  # the feature the synthetic market leaks its direction through
WALK_FORWARD_FOLDS = 2
TREND = 1e-3


# ---- synthetic world ------------------------------------------------------------------------------
def trending_features(calendar: TradingCalendar, names: tuple[str, ...], start: date, end: date) -> pl.DataFrame:
    """Each half session trends up or down (the second half against the first) by TREND a bar,
    enough to pay 75 bps in and out; SIGNAL carries the direction."""
    sessions = calendar.sessions(start, end)
    per = calendar.bars_per_session
    n = len(sessions) * per
    rng = np.random.default_rng(0)
    first = rng.choice([-1.0, 1.0], size=len(sessions))
    half = np.repeat(np.column_stack([first, -first]).ravel(), per // 2)  # the trend turns mid-session
    ret = half * TREND + rng.normal(0, 5e-5, n)
    close = 4000.0 * np.exp(np.cumsum(ret))
    cols = {name: rng.normal(0, 1, n) for name in names}
    cols[SIGNAL] = half + rng.normal(0, 0.1, n)
    cols["position"] = np.zeros(n)
    cols["time_norm"] = np.tile(np.arange(per) / (per - 1), len(sessions))
    return pl.DataFrame(
        {
            "time": pl.Series(calendar.session_grid_array(sessions)).dt.replace_time_zone("UTC").cast(UTC_TIME),
            "session": pl.Series(np.repeat(np.array(sessions, dtype="datetime64[D]"), per)).cast(pl.Date),
            "open": close, "high": close, "low": close, "close": close,
            **{name: cols[name] for name in names},
        }
    )


def follow_signal_layers(names: tuple[str, ...], strength: float = 8.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """logits = [-k z, 0, +k z] with z the (normalized) signal: BUY up-trends, SELL down-trends."""
    w = np.zeros((len(names), 3))
    w[names.index(SIGNAL)] = [-strength, 0.0, strength]
    return [(w, np.zeros(3))]


def hold_layers(names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.zeros((len(names), 3)), np.array([0.0, 5.0, 0.0]))]


@pytest.fixture
def world(tmp_path: Path):
    """Config dir (smoke with walk-forward folds), lake with dataset + feature partitions, store."""
    config_dir = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config_dir)
    smoke_file = config_dir / "experiments" / "smoke.yaml"
    raw = yaml.safe_load(smoke_file.read_text())
    raw["backtest"]["walk_forward_folds"] = WALK_FORWARD_FOLDS
    smoke_file.write_text(yaml.safe_dump(raw))
    cfg = load_platform_config(config_dir)
    exp, contract = cfg.experiment(EXPERIMENT), cfg.features
    calendar = TradingCalendar(cfg.instrument)

    lake = ParquetLake(tmp_path / "lake")
    features = trending_features(calendar, contract.names, exp.date_ranges.train.start, exp.date_ranges.test.end)
    for (session,), part in features.group_by("session", maintain_order=True):
        lake.write(ds.SOURCE_DATASET, session.isoformat(), part)
    built = ds.build_dataset(features, exp, contract, min_rows={"train": 1, "val": 1, "test": 1})
    ds.save_dataset(built, lake, EXPERIMENT)

    platform = PlatformResource(
        data_dir=str(tmp_path / "lake"),
        models_dir=str(tmp_path / "models"),
        config_dir=str(config_dir),
        database_url=f"sqlite:///{(tmp_path / 'test.db').as_posix()}",
        state_dir=str(tmp_path / "state"),
    )
    store = get_store(platform.database_url)

    def register(model_id: str, layers, experiment: str = EXPERIMENT, dataset_hash: str | None = None) -> dict:
        folder = tmp_path / "models" / experiment / model_id
        onnx_path = mlp_policy_onnx(
            folder / "policy.onnx", layers, {"feature_order_hash": contract.feature_order_hash, "model_id": model_id}
        )
        norm_path = built.norm_stats.to_json(folder / "norm_stats.json")
        return store.models.register(
            model_id=model_id, experiment_name=experiment, experiment_version=exp.version,
            model_hash=sha256_hex(model_id), onnx_hash=file_hash(onnx_path), norm_stats_hash=built.norm_stats.hash,
            feature_order_hash=contract.feature_order_hash, dataset_hash=dataset_hash or built.dataset_hash,
            config_hash=exp.config_hash, mlflow_run_id=f"run-{model_id}", onnx_path=str(onnx_path),
            norm_stats_path=str(norm_path),
        )

    # A real (empty) MLflow store: the registered models' run ids are not in it, so the backtest
    # writes nothing to MLflow (adapters/test_tracking_models.py and defs/test_training.py cover real runs).
    mlflow = MlflowResource(tracking_uri=fresh_mlflow_uri(tmp_path / "state"), artifact_root=str(tmp_path / "mlartifacts"))
    return {"platform": platform, "store": store, "lake": lake, "register": register, "built": built,
            "contract": contract, "exp": exp, "mlflow": mlflow}


def materialize(world, assets=(backtest, promotion_proposal), run_config=None, raise_on_error=True):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("experiments", [EXPERIMENT])
    return dg.materialize_to_memory(
        list(assets), partition_key=EXPERIMENT, resources={"platform": world["platform"], "mlflow": world["mlflow"]},
        instance=instance,
        run_config=run_config, raise_on_error=raise_on_error,
    )


def metadata(result, key: str) -> dict:
    mats = result.asset_materializations_for_node(key)
    assert len(mats) == 1
    return {k: v.value for k, v in mats[0].metadata.items()}


# ---- tests ----------------------------------------------------------------------------------------
def test_definitions_load(world) -> None:
    merged = dg.Definitions.merge(
        evaluation_defs, dg.Definitions(resources={"platform": world["platform"], "mlflow": world["mlflow"]})
    )
    dg.Definitions.validate_loadable(merged)
    job = merged.resolve_job_def("evaluate_experiment_job")
    assert {n.name for n in job.nodes} == {"evaluation__backtest", "evaluation__promotion_proposal"}


def test_without_production_baseline_a_good_model_is_proposed_for_promotion(world) -> None:
    names = world["contract"].names
    world["register"]("cand", follow_signal_layers(names))
    result = materialize(world)
    assert result.success

    meta = metadata(result, "evaluation__backtest")
    assert meta["model_id"] == "cand" and meta["baseline_model_id"] == "none" and meta["out_of_sample"] is True
    # Both decision rules side by side (issue #17.2): argmax/full size/close fill (votes) and the live rule.
    assert meta["metrics"].startswith("| metric | candidate | candidate, live rule | buy & hold | flat |")
    assert meta["live_rule_fill"] == "open 1 bar(s) after the signal" and meta["live_rule_trades"] > 0
    assert meta["equity_drawdown"].startswith("![") and "(data:image/png;base64," in meta["equity_drawdown"]
    assert "| 75 |" in meta["cost_sweep"]
    assert meta["walk_forward"].count("\n| ") == WALK_FORWARD_FOLDS and "positive in" in meta["walk_forward"]

    lake = world["lake"]
    series = bt_store.load_backtest_series(lake, EXPERIMENT, "cand")
    test_split = world["built"].splits["test"]
    assert series.height == test_split.height
    assert {"time", "session", "close", "position", "equity", "drawdown", "bar_return", "buy_hold_equity",
            "baseline_equity"} <= set(series.columns)
    assert series["baseline_equity"].null_count() == series.height
    assert set(series["position"].unique().to_list()) == {-1, 0, 1}
    trades = bt_store.load_backtest_trades(lake, EXPERIMENT, "cand")
    report = bt_store.load_backtest_report(lake, EXPERIMENT, "cand")
    assert trades.height == report["metrics"]["trades"] >= 50
    assert report["metrics"]["final_equity"] == pytest.approx(series["equity"][-1])
    assert report["metrics"]["n_trials"] == 1  # smoke has one seed and is the only experiment trained
    assert len(report["walk_forward"]["folds"]) == WALK_FORWARD_FOLDS
    assert [r["cost_bps"] for r in report["cost_sweep"]] == [2, 5, 10, 25, 50, 75]
    live = report["live_rule"]  # the live rule's column: sized at <= 10 % of equity, next-open fills
    assert live["fill_delay_bars"] == 1 and 0 < live["mean_size"] <= 0.10 + 1e-12
    assert live["final_equity"] != report["metrics"]["final_equity"]

    prop = metadata(result, "evaluation__promotion_proposal")
    assert (prop["recommendation"], prop["confidence"], prop["status"]) == ("PROMOTE", 0.85, "PENDING_APPROVAL")
    row = world["store"].proposals.by_model("cand")
    assert row["recommendation"] == "PROMOTE" and row["status"] == "PENDING_APPROVAL"
    assert all(c["status"] == "PASS" for c in row["criteria"].values())
    assert set(row["criteria"]) == {"min_test_bars", "min_sharpe", "max_drawdown", "min_win_rate", "min_trades",
                                    "fold_stability", "psr", "dsr", "min_track_record"}
    assert {c["kind"] for c in row["criteria"].values()} == {"point", "significance"}
    assert "| psr | significance |" in prop["criteria"] and "| dsr | significance |" in prop["criteria"]
    lineage = row["lineage"]
    for key in ("config_hash", "dataset_hash", "feature_order_hash", "norm_stats_hash", "model_hash", "onnx_hash",
                "mlflow_run_id", "backtest_hash", "test_start", "test_end"):
        assert lineage[key], key
    assert lineage["dataset_hash"] == world["built"].dataset_hash and lineage["mlflow_run_id"] == "run-cand"
    assert row["backtest_hash"] == lineage["backtest_hash"] == report["backtest_hash"]
    assert str(row["test_start"]) == test_split["session"].min().isoformat()
    assert row["series_path"] and Path(row["series_path"]).exists()
    assert row["metrics"]["walk_forward"]["aggregate"]["folds"] == WALK_FORWARD_FOLDS
    statement = row["statistical_statement"]
    assert "PSR(0)" in statement and "DSR" in statement and "1 trial " in statement
    assert "minimum track record length" in statement and "one-year test can only certify" in statement
    assert row["expires_at"] is not None


def test_with_production_baseline_an_equal_model_is_only_reviewed(world) -> None:
    names = world["contract"].names
    world["register"]("prod", follow_signal_layers(names))
    world["store"].models.set_stage("prod", "production")
    world["register"]("cand", follow_signal_layers(names))
    result = materialize(world)

    meta = metadata(result, "evaluation__backtest")
    assert meta["baseline_model_id"] == "prod"
    assert "| production |" in meta["metrics"].splitlines()[0]
    series = bt_store.load_backtest_series(world["lake"], EXPERIMENT, "cand")
    np.testing.assert_allclose(series["baseline_equity"].to_numpy(), series["equity"].to_numpy())

    row = world["store"].proposals.by_model("cand")
    assert row["recommendation"] == "REVIEW" and row["confidence"] == 0.60
    comp = row["baseline_comparison"]
    assert comp["baseline_model_id"] == "prod" and comp["improved"] is False
    assert comp["deltas"]["sharpe"]["delta"] == pytest.approx(0.0)
    assert "production model" in row["statistical_statement"]


def test_with_a_weaker_production_baseline_the_candidate_is_promoted(world) -> None:
    names = world["contract"].names
    world["register"]("prod", hold_layers(names))
    world["store"].models.set_stage("prod", "production")
    world["register"]("cand", follow_signal_layers(names))
    materialize(world)
    row = world["store"].proposals.by_model("cand")
    assert row["recommendation"] == "PROMOTE" and row["baseline_comparison"]["improved"] is True
    assert row["metrics"]["benchmarks"]["baseline"]["trades"] == 0


def test_rerun_updates_the_same_proposal_without_duplicating(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    first = world["store"].proposals.by_model("cand")
    materialize(world)
    rows = world["store"].proposals.list()
    assert len(rows) == 1 and rows[0]["proposal_id"] == first["proposal_id"]


def test_a_losing_model_is_rejected_with_the_failing_criteria(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names, strength=-8.0))  # trades against the trend
    materialize(world)
    row = world["store"].proposals.by_model("cand")
    assert row["recommendation"] == "REJECT" and row["confidence"] == 0.90
    assert row["criteria"]["min_sharpe"]["status"] == "FAIL"
    assert any(r.startswith("FAIL min_sharpe") for r in row["reasons"])


def test_an_explicit_period_is_a_diagnostic_even_out_of_sample(world) -> None:
    """Only the test split (and the walk-forward folds) vote: an explicit period, even one after the
    model's training end, is stored and shown but never replaces the vote (no cherry-picked period)."""
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    before = world["store"].proposals.by_model("cand")
    cfg = {"ops": {"evaluation__backtest": {"config": {"start": "2024-06-24", "end": "2024-06-26"}}}}
    result = materialize(world, run_config=cfg)
    meta = metadata(result, "evaluation__backtest")
    assert meta["n_bars"] == 180 and meta["period_source"] == "custom" and meta["out_of_sample"] is True
    assert meta["vote"].startswith("out-of-sample diagnostic of an explicit period, never votes")
    assert "never votes; the proposal is unchanged" in metadata(result, "evaluation__promotion_proposal")["diagnostic"]
    after = world["store"].proposals.by_model("cand")
    assert (after["backtest_hash"], after["recommendation"]) == (before["backtest_hash"], before["recommendation"])


def test_only_diagnostics_and_no_test_split_backtest_write_no_proposal(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    cfg = {"ops": {"evaluation__backtest": {"config": {"start": "2024-06-24", "end": "2024-06-26"}}}}
    meta = metadata(materialize(world, run_config=cfg), "evaluation__promotion_proposal")
    assert meta["recommendation"] == "none" and meta["status"] == "no proposal"
    assert world["store"].proposals.by_model("cand") is None


def test_a_period_with_no_data_is_a_clear_error(world) -> None:
    """Bad input of the issue: a period with no data is refused naming its sessions (no proposal)."""
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    cfg = {"ops": {"evaluation__backtest": {"config": {"start": "2030-01-02", "end": "2030-01-03"}}}}
    with pytest.raises(Exception, match=r"holds no features/m5_features data for any of the 2 sessions of "
                                        r"2030-01-02\.\.2030-01-03 \(missing: 2030-01-02, 2030-01-03\)"):
        materialize(world, run_config=cfg)
    with pytest.raises(Exception, match="holds no trading session"):
        materialize(world, run_config={"ops": {"evaluation__backtest": {"config": {"start": "2024-06-29",
                                                                                   "end": "2024-06-30"}}}})
    assert world["store"].proposals.by_model("cand") is None


def test_missing_model_file_is_refused(world) -> None:
    rec = world["register"]("cand", follow_signal_layers(world["contract"].names))
    Path(rec["onnx_path"]).unlink()
    with pytest.raises(Exception, match=r"refusing to backtest the candidate model: .*does not exist"):
        materialize(world, assets=(backtest,))


def test_model_whose_hash_differs_from_the_registry_is_refused(world) -> None:
    rec = world["register"]("cand", follow_signal_layers(world["contract"].names))
    mlp_policy_onnx(rec["onnx_path"], hold_layers(world["contract"].names),
                    {"feature_order_hash": world["contract"].feature_order_hash, "model_id": "cand"})
    with pytest.raises(Exception, match=r"refusing to backtest the candidate model: .*sha256.*registry"):
        materialize(world, assets=(backtest,))
    assert bt_store.load_backtest_report(world["lake"], EXPERIMENT, "cand") is None


def test_nan_close_in_the_test_split_names_the_bar(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    lake = world["lake"]
    test = lake.read(ds.dataset_name(EXPERIMENT), "test")
    bad = test.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(float("nan")).otherwise(pl.col("close")).alias("close")
    )
    lake.write(ds.dataset_name(EXPERIMENT), "test", bad)
    when = test["time"][7].strftime("%Y-%m-%dT%H:%M:%S")
    with pytest.raises(Exception, match=rf"close price is NaN at bar 7 \({when} UTC\)"):
        materialize(world, assets=(backtest,))


def test_model_trained_on_another_dataset_is_refused(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names), dataset_hash="0" * 64)
    with pytest.raises(Exception, match="was trained on dataset 000000000000"):
        materialize(world, assets=(backtest,))


def test_no_model_and_no_backtest_are_clear_errors(world) -> None:
    with pytest.raises(Exception, match=r"no model for 'smoke': run `usdcop train -e smoke`.*has no registered model"):
        materialize(world, assets=(backtest,))
    with pytest.raises(Exception, match="no backtest for experiment 'smoke'"):
        materialize(world, assets=(promotion_proposal,))


# ---- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(world, monkeypatch: pytest.MonkeyPatch):
    from usdcop_platform.settings import get_settings

    p = world["platform"]
    for var, value in (("USDCOP_DATA_DIR", p.data_dir), ("USDCOP_MODELS_DIR", p.models_dir),
                       ("USDCOP_STATE_DIR", p.state_dir), ("USDCOP_CONFIG_DIR", p.config_dir),
                       ("DATABASE_URL", p.database_url)):
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    get_settings.cache_clear()
    yield world
    get_settings.cache_clear()


@pytest.mark.slow  # loads the whole code location through the CLI (~10 s)
def test_cli_backtest_writes_a_proposal(cli_env) -> None:
    from typer.testing import CliRunner

    from usdcop_platform.cli import app

    cli_env["register"]("cand", follow_signal_layers(cli_env["contract"].names))
    runner = CliRunner()
    out = runner.invoke(app, ["backtest", "--experiment", EXPERIMENT])
    assert out.exit_code == 0, out.output
    assert "PROMOTE" in out.output and "PENDING_APPROVAL" in out.output and "PSR(0)" in out.output
    assert cli_env["store"].proposals.by_model("cand")["recommendation"] == "PROMOTE"

    custom = runner.invoke(app, ["backtest", "-e", EXPERIMENT, "--start", "2024-06-24", "--end", "2024-06-26"])
    assert custom.exit_code == 0, custom.output
    assert "out-of-sample diagnostic" in custom.output and "keeps its out-of-sample vote: PROMOTE" in custom.output
    assert len(cli_env["store"].proposals.list()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2024-06-24"], "give both --start and --end"),
        (["--start", "24/06/2024", "--end", "2024-06-26"], "--start must be a date"),
        (["--model-id", "nope"], "model 'nope' is not in the registry"),
    ],
)
def test_cli_backtest_bad_arguments_are_one_clear_line(cli_env, args, message) -> None:
    from typer.testing import CliRunner

    from usdcop_platform.cli import app

    cli_env["register"]("cand", follow_signal_layers(cli_env["contract"].names))
    out = CliRunner().invoke(app, ["backtest", "--experiment", EXPERIMENT, *args])
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output


# ---- issue #13: every trial counted, out of sample only, coverage, overfitting ---------------------------
def ledger_trial(trial_id: str, sharpe: float | None, version: str = "1.0.0", **over) -> dict:
    return {"trial_id": trial_id, "family": EXPERIMENT, "experiment_version": version, "kind": "training_seed",
            "seed": 0, "config_hash": "c" * 64, "data_hash": "d" * 64, "val_sharpe": 0.1, "test_sharpe": sharpe,
            "test_bars": 1000, **over}


def test_dsr_counts_every_ledger_trial_of_the_family_with_their_variance(world) -> None:
    """Audit finding 1: N came from the configured seeds (smoke: 1) however often the family was
    trained, and V was the null variance. Now N = ledger rows across versions, V = their variance."""
    from usdcop_platform.adapters import trial_returns
    from usdcop_platform.core.metrics import V_CROSS_TRIAL

    sharpes = [0.5, 1.5, -0.3, 2.0, 0.9]
    world["store"].trials.record([ledger_trial(f"t{i}", s, version="1.0.0" if i < 3 else "1.1.0",
                                               returns_partition=f"t{i}")
                                  for i, s in enumerate(sharpes)])
    sessions = world["built"].splits["test"]["session"].unique().sort().to_list()
    rng = np.random.default_rng(0)
    for i in range(len(sharpes)):
        trial_returns.save_trial_returns(world["lake"], EXPERIMENT, f"t{i}", pl.DataFrame(
            {"session": sessions, "split": ["test"] * len(sessions), "session_return": rng.normal(0, 0.01, len(sessions))}))
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    result = materialize(world)

    m = bt_store.load_backtest_report(world["lake"], EXPERIMENT, "cand")["metrics"]
    assert m["n_trials"] == 5
    assert "trial ledger: 5 rows of family 'smoke' (5 training seeds; versions 1.0.0, 1.1.0)" == m["n_trials_source"]
    assert m["trial_sharpe_variance_annual"] == pytest.approx(np.var(sharpes, ddof=1))
    assert m["trial_variance_source"] == V_CROSS_TRIAL
    meta = metadata(result, "evaluation__promotion_proposal")
    assert meta["n_trials"] == 5 and "trial ledger" in meta["n_trials_source"]
    row = world["store"].proposals.by_model("cand")
    assert "N = 5 trials of the experiment family (trial ledger: 5 rows" in row["statistical_statement"]
    assert "V = " in row["statistical_statement"] and "cross-trial" in row["statistical_statement"]
    pbo = row["metrics"]["overfitting"]["pbo"]
    assert pbo["n_trials"] == 5 and 0.0 <= pbo["pbo"] <= 1.0 and pbo["partitions"] >= 2
    assert 0.0 <= meta["pbo"] <= 1.0 and "Probability of backtest overfitting (CSCV over 5 trials" in meta["overfitting"]


def test_one_trial_family_states_n_one_and_dsr_equals_psr(world) -> None:
    world["store"].trials.record([ledger_trial("only", 1.0)])
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    row = world["store"].proposals.by_model("cand")
    m = row["metrics"]
    assert m["n_trials"] == 1 and m["dsr"] == m["psr"]
    assert "N = 1 trial of the experiment family (trial ledger: 1 row" in row["statistical_statement"]
    assert "DSR = PSR(0)" in row["statistical_statement"]
    assert m["overfitting"]["pbo"]["pbo"] is None and "CSCV needs 2 or more" in m["overfitting"]["pbo"]["reason"]


def test_identical_trial_sharpes_give_v_zero_handled(world) -> None:
    world["store"].trials.record([ledger_trial(f"same{i}", 0.8) for i in range(3)])
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    row = world["store"].proposals.by_model("cand")
    m = row["metrics"]
    assert m["n_trials"] == 3 and m["trial_sharpe_variance"] == 0.0 and m["dsr"] == pytest.approx(m["psr"])
    assert "V = 0, the trials' Sharpes are identical" in row["statistical_statement"]


def test_spa_against_the_benchmarks_is_in_the_proposal(world) -> None:
    names = world["contract"].names
    world["register"]("prod", hold_layers(names))
    world["store"].models.set_stage("prod", "production")
    world["register"]("cand", follow_signal_layers(names))
    result = materialize(world)
    spa = world["store"].proposals.by_model("cand")["metrics"]["overfitting"]["spa"]
    assert set(spa["pvalues"]) == {"baseline", "buy_and_hold", "flat"} and spa["bootstrap"] == "stationary"
    assert spa["pvalue"] < 0.05  # the leaked signal is a real edge
    meta = metadata(result, "evaluation__promotion_proposal")
    assert meta["spa_pvalue"] == pytest.approx(spa["pvalue"], abs=5e-5) and "Hansen's SPA test" in meta["overfitting"]
    assert "Hansen's SPA test" in world["store"].proposals.by_model("cand")["statistical_statement"]


def test_an_in_sample_backtest_is_a_diagnostic_and_never_changes_the_vote(world) -> None:
    """Audit finding 3: `backtest --start/--end` inside the train/val split replaced the vote."""
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    before = world["store"].proposals.by_model("cand")
    val = world["exp"].date_ranges.val
    cfg = {"ops": {"evaluation__backtest": {"config": {"start": val.start.isoformat(), "end": val.end.isoformat()}}}}
    result = materialize(world, run_config=cfg)
    meta = metadata(result, "evaluation__backtest")
    assert meta["out_of_sample"] is False and meta["vote"].startswith("IN-SAMPLE diagnostic, never votes")
    assert "on or before the model's training end 2024-04-30" in meta["vote"]
    partition = bt_store.backtest_partition("cand", val.start.isoformat(), val.end.isoformat())
    diag = bt_store.load_backtest_report(world["lake"], EXPERIMENT, partition)
    assert diag["role"] == "in_sample_diagnostic" and diag["backtest_hash"] != before["backtest_hash"]
    prop = metadata(result, "evaluation__promotion_proposal")
    assert prop["diagnostic"].startswith("IN-SAMPLE diagnostic") and "the proposal is unchanged" in prop["diagnostic"]
    after = world["store"].proposals.by_model("cand")
    assert after["backtest_hash"] == before["backtest_hash"] and after["metrics"] == before["metrics"]
    # a later plain proposal run still votes on the test split, not on the diagnostic
    materialize(world, assets=(promotion_proposal,))
    assert world["store"].proposals.by_model("cand")["backtest_hash"] == before["backtest_hash"]


def test_a_period_before_the_training_end_is_in_sample_even_outside_train_and_val(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    gap = {"start": "2024-05-02", "end": "2024-05-02"}  # between val end and test start, before the test split
    cfg = {"ops": {"evaluation__backtest": {"config": {"start": "2024-01-16", "end": "2024-01-17"}}}}
    meta = metadata(materialize(world, assets=(backtest,), run_config=cfg), "evaluation__backtest")
    assert meta["out_of_sample"] is False
    assert "SPA test not computed: 2 session(s); the SPA test needs 10 or more" in meta["overfitting"]
    cfg = {"ops": {"evaluation__backtest": {"config": gap}}}
    meta = metadata(materialize(world, assets=(backtest,), run_config=cfg), "evaluation__backtest")
    assert meta["out_of_sample"] is True and meta["vote"].startswith("out-of-sample diagnostic")
    # folds that do not fit a one-session period: a stated result, not a crash
    report = bt_store.load_backtest_report(world["lake"], EXPERIMENT, bt_store.backtest_partition("cand", **gap))
    assert report["walk_forward"] is None
    assert report["walk_forward_skipped"].startswith("walk-forward folds do not fit: 2 folds need at least 2 sessions")


def test_folds_that_do_not_fit_the_test_split_are_a_clear_error(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    p = world["platform"]
    smoke_file = Path(p.config_dir) / "experiments" / "smoke.yaml"
    raw = yaml.safe_load(smoke_file.read_text())
    raw["backtest"]["walk_forward_folds"] = 500
    smoke_file.write_text(yaml.safe_dump(raw))
    platform = PlatformResource(data_dir=p.data_dir, models_dir=p.models_dir, config_dir=p.config_dir,
                                database_url=p.database_url, state_dir=p.state_dir)
    with pytest.raises(Exception, match=r"walk-forward folds do not fit: 500 folds need at least 500 sessions, the "
                                        r"period has \d+: lower backtest.walk_forward_folds of 'smoke'"):
        materialize({**world, "platform": platform}, assets=(backtest,))


def test_a_partly_covered_period_is_refused_naming_the_missing_sessions(world) -> None:
    """Audit finding 4: a partly covered custom period was silently truncated."""
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    period = {"start": "2024-06-20", "end": "2024-07-31"}  # the lake ends 2024-06-28; 2024-07-01 is a holiday
    with pytest.raises(Exception, match=r"the lake covers 7 of 29 sessions \(24\.1%\) of 2024-06-20\.\.2024-07-31; "
                                        r"missing: 2024-07-02, 2024-07-03, .*, 2024-07-15 and 12 more\. .*--allow-partial"):
        materialize(world, run_config={"ops": {"evaluation__backtest": {"config": period}}})
    assert world["store"].proposals.by_model("cand") is None


def test_allow_partial_runs_and_states_the_coverage_everywhere(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    cfg = {"ops": {"evaluation__backtest": {"config": {"start": "2024-06-20", "end": "2024-07-10",
                                                       "allow_partial": True}}}}
    result = materialize(world, run_config=cfg)
    meta = metadata(result, "evaluation__backtest")
    assert meta["coverage"].startswith("50.00 % of the requested sessions (7 of 14; missing 2024-07-02")
    assert meta["n_bars"] == 7 * 60
    partition = bt_store.backtest_partition("cand", "2024-06-20", "2024-07-10")
    report = bt_store.load_backtest_report(world["lake"], EXPERIMENT, partition)
    assert report["coverage"]["coverage"] == pytest.approx(0.5) and len(report["coverage"]["missing_sessions"]) == 7
    assert report["role"] == "oos_diagnostic"  # an explicit period never votes, covered or not
    assert world["store"].proposals.by_model("cand") is None


def test_cli_refuses_partial_coverage_allows_it_on_request_and_marks_in_sample(cli_env) -> None:
    from typer.testing import CliRunner

    from usdcop_platform.cli import app

    cli_env["register"]("cand", follow_signal_layers(cli_env["contract"].names))
    runner = CliRunner()
    refused = runner.invoke(app, ["backtest", "-e", EXPERIMENT, "--start", "2024-06-20", "--end", "2024-07-10"])
    assert refused.exit_code == 1 and "the lake covers 7 of 14 sessions (50.0%)" in refused.output
    assert "--allow-partial" in refused.output and "Traceback" not in refused.output
    partial = runner.invoke(app, ["backtest", "-e", EXPERIMENT, "--start", "2024-06-20", "--end", "2024-07-10",
                                  "--allow-partial"])
    assert partial.exit_code == 0, partial.output
    assert "coverage: 50.00 % of the requested sessions (7 of 14" in partial.output
    assert "out-of-sample diagnostic of an explicit period, never votes" in partial.output
    assert runner.invoke(app, ["backtest", "-e", EXPERIMENT]).exit_code == 0  # the vote: the test split
    inside = runner.invoke(app, ["backtest", "-e", EXPERIMENT, "--start", "2024-04-02", "--end", "2024-04-30"])
    assert inside.exit_code == 0, inside.output
    assert "IN-SAMPLE diagnostic" in inside.output and "never votes" in inside.output
    assert "keeps its out-of-sample vote" in inside.output


def _with_walk_forward(world, **wf) -> PlatformResource:
    p = world["platform"]
    smoke_file = Path(p.config_dir) / "experiments" / "smoke.yaml"
    raw = yaml.safe_load(smoke_file.read_text())
    raw["backtest"]["walk_forward"] = wf
    smoke_file.write_text(yaml.safe_dump(raw))
    return PlatformResource(data_dir=p.data_dir, models_dir=p.models_dir, config_dir=p.config_dir,
                            database_url=p.database_url, state_dir=p.state_dir)


def test_the_vote_uses_the_expanding_walk_forward_and_its_stability(world) -> None:
    from usdcop_platform.defs.evaluation.walk_forward import WalkForwardRunConfig, walk_forward

    platform = _with_walk_forward(world, folds=4, test_sessions=5, min_train_sessions=20)
    w = {**world, "platform": platform}
    w["register"]("cand", follow_signal_layers(world["contract"].names))
    # not run yet: the stability criterion fails and the proposal says why
    materialize(w)
    row = world["store"].proposals.by_model("cand")
    assert row["criteria"]["fold_stability"]["status"] == "FAIL" and row["recommendation"] == "REJECT"
    assert any("walk-forward (4 expanding folds) has not run" in r for r in row["reasons"])

    result = materialize(w, assets=(walk_forward,),
                         run_config=dg.RunConfig(ops={"evaluation__walk_forward": WalkForwardRunConfig(total_timesteps=256)}))
    meta = metadata(result, "evaluation__walk_forward")
    assert meta["folds"] == 4 and len(set(meta["norm_stats_hashes"])) == 4 and meta["per_fold"].count("\n| ") == 4
    materialize(w, assets=(promotion_proposal,))
    row = world["store"].proposals.by_model("cand")
    wf = row["metrics"]["walk_forward"]
    assert wf["kind"] == "expanding" and len(wf["folds"]) == 4
    assert row["criteria"]["fold_stability"]["value"] == wf["aggregate"]["positive_share"]
    assert row["metrics"]["test_split_folds"]["aggregate"]["folds"] == WALK_FORWARD_FOLDS


def test_a_walk_forward_on_another_budget_does_not_stand_in_for_this_one(world) -> None:
    from usdcop_platform.adapters.walk_forward_reports import load_report
    from usdcop_platform.defs.evaluation.walk_forward import WalkForwardRunConfig, walk_forward

    platform = _with_walk_forward(world, folds=2, test_sessions=5, min_train_sessions=20)
    w = {**world, "platform": platform}
    materialize(w, assets=(walk_forward,),
                run_config=dg.RunConfig(ops={"evaluation__walk_forward": WalkForwardRunConfig(total_timesteps=256)}))
    exp = platform.config.experiment(EXPERIMENT)
    assert load_report(platform.lake, EXPERIMENT, exp.config_hash)["total_timesteps"] == 256
    assert load_report(platform.lake, EXPERIMENT, exp.config_hash, total_timesteps=256) is not None
    # the experiment's own budget (a full training) needs folds trained on that budget
    assert load_report(platform.lake, EXPERIMENT, exp.config_hash, total_timesteps=exp.algorithm.total_timesteps) is None


def test_cli_runs_the_walk_forward_the_vote_needs(cli_env) -> None:
    from typer.testing import CliRunner

    from usdcop_platform.cli import app

    smoke_file = Path(cli_env["platform"].config_dir) / "experiments" / "smoke.yaml"
    raw = yaml.safe_load(smoke_file.read_text())
    raw["backtest"]["walk_forward"] = {"folds": 4, "test_sessions": 5, "min_train_sessions": 20}
    raw["algorithm"]["total_timesteps"] = 1024
    smoke_file.write_text(yaml.safe_dump(raw))
    cli_env["register"]("cand", follow_signal_layers(cli_env["contract"].names))
    out = CliRunner().invoke(app, ["backtest", "--experiment", EXPERIMENT])
    assert out.exit_code == 0, out.output
    row = cli_env["store"].proposals.by_model("cand")
    assert row["metrics"]["walk_forward"]["kind"] == "expanding" and len(row["metrics"]["walk_forward"]["folds"]) == 4
    assert row["criteria"]["fold_stability"]["value"] is not None
