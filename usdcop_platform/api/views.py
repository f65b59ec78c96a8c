"""Assembles what the API and the review page show about one proposal (no HTTP here).

Sources: the proposal row (metrics, criteria as written by core.promotion, baseline comparison,
lineage, the additional backtests reviewers requested), the model registry row, the lake
(series and trades), the audit log and the backtest requests. `experiment_detail` is the one
place this is gathered; the JSON endpoint and the HTML page both render from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store import NotFoundError
from usdcop_platform.api import series as S
from usdcop_platform.api.charts import fixed
from usdcop_platform.api.comparison import METRIC_DISPLAY, Recompute, Reference, comparison_rows, references
from usdcop_platform.settings import Settings

# Criteria metrics shown as percentages.
PCT_CRITERIA = frozenset({"max_drawdown", "win_rate"})
# Metrics shown for each additional (reviewer-requested) backtest, keys of METRIC_DISPLAY.
ADDITIONAL_METRICS = ("sharpe", "total_return", "max_drawdown", "win_rate", "trades", "psr")


def fmt_value(value: Any, kind: str = "num") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return "∞" if v > 0 else "−∞" if v < 0 else "n/a"
    if kind == "pct":
        return fixed(v * 100, 2) + "%"
    if kind == "int":
        return f"{int(round(v)):,}"
    if kind == "money":
        return fixed(v, 2)
    return fixed(v, 0) if abs(v) >= 10000 else fixed(v, 3, thousands=False)


def criteria_rows(criteria: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Rows of the criteria table from core.promotion's `criteria_dict()` form."""
    rows = []
    for name, c in (criteria or {}).items():
        if not isinstance(c, Mapping):
            rows.append({"name": name, "label": name, "status": str(c), "value_text": "—", "threshold_text": "—"})
            continue
        metric = str(c.get("metric", name))
        kind = "pct" if metric in PCT_CRITERIA else "int" if metric in ("trades", "test_bars") else "num"
        if isinstance(c.get("threshold"), float) and not math.isfinite(c["threshold"]) and metric == "test_bars":
            kind = "num"
        status = c.get("status") or ("PASS" if c.get("passed") else "FAIL")
        comparator = c.get("comparator", "")
        rows.append(
            {
                "name": name,
                "kind": c.get("kind", "point"),
                "label": f"{name} ({metric})",
                "status": status,
                "value": c.get("value"),
                "threshold": c.get("threshold"),
                "value_text": fmt_value(c.get("value"), kind),
                "threshold_text": f"{comparator} {fmt_value(c.get('threshold'), kind)}".strip(),
            }
        )
    return rows


def decisive_reasons(reasons: list[str] | None, criteria: list[dict[str, Any]]) -> dict[str, Any]:
    """What the recommendation card says above the criteria table, without repeating it.

    core.promotion writes one "FAIL <criterion>" reason per failed criterion: that restates a
    row of the table, so those lines become the names of the failed criteria (their rows are
    highlighted); every other reason (a too-short test, the significance or production-baseline
    verdict, a walk-forward note) adds information and is kept as written.
    """
    failed = [c["label"] for c in criteria if c.get("status") == "FAIL"]
    kept = [r for r in reasons or [] if not r.startswith("FAIL ")]
    return {"failed": failed, "reasons": kept}


def rules_said_reject_because(proposal: Mapping[str, Any]) -> str:
    """Why the first vote was REJECT, in one clause: the failed criteria, then the other reasons."""
    view = decisive_reasons(proposal.get("reasons"), criteria_rows(proposal.get("criteria")))
    parts = []
    if view["failed"]:
        parts.append("these criteria failed: " + ", ".join(view["failed"]))
    parts += view["reasons"]
    return "; ".join(parts) or "no reason recorded"


def override_statement(proposal: Mapping[str, Any], promote: bool, production_model_id: str | None) -> str:
    """What approving a REJECT-rated proposal means, restated for the reviewer to confirm."""
    head = f"The rules said REJECT because {rules_said_reject_because(proposal)}."
    if not promote:
        return f"{head} You are overriding them to approve model {proposal['model_id']} (not promoted to production)."
    replaced = f", replacing {production_model_id}" if production_model_id and production_model_id != proposal["model_id"] else ""
    return f"{head} You are overriding them to put model {proposal['model_id']} in production{replaced}."


def _num_text(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, float)) and not math.isfinite(float(v)):
        return "∞" if float(v) > 0 else "n/a"
    return f"{float(v):.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def statistics_view(proposal: Mapping[str, Any], store: Any) -> dict[str, Any]:
    """The significance and overfitting statistics of a proposal, each with its source: N and V of
    the deflated Sharpe (as recorded, and as the trial ledger holds them now), PSR(0), DSR, MinTRL,
    PBO and SPA."""
    from usdcop_platform.core import overfitting
    from usdcop_platform.core.trials import deflate_with_family, family_trials

    m = proposal.get("metrics") or {}
    crit = proposal.get("criteria") or {}
    over = m.get("overfitting") or {}
    family = proposal["experiment_name"]
    fam = family_trials(family, store.trials.family(family))
    now = deflate_with_family(m, fam)
    recorded_n = m.get("n_trials")
    rows = [
        ("N (trials in the family)", _num_text(recorded_n), m.get("n_trials_source") or "not recorded (older proposal)"),
        ("V (variance of the trials' annual Sharpes)", _num_text(m.get("trial_sharpe_variance_annual"), 4),
         m.get("trial_variance_source") or "not recorded"),
        ("PSR(0)", _num_text(m.get("psr")),
         "probability that the true Sharpe is above 0, from this test's length, skew and kurtosis"),
        ("DSR", _num_text(m.get("dsr")),
         f"PSR against the best Sharpe N luck-only trials would show (annual {_num_text(m.get('sr0_annual'), 2)})"),
    ]
    mintrl = crit.get("min_track_record") or {}
    if mintrl:
        rows.append((f"MinTRL({_num_text((crit.get('psr') or {}).get('threshold'), 2)})",
                     f"{_num_text(mintrl.get('threshold'))} bars",
                     f"the test holds {_num_text(mintrl.get('value'))} bars: {mintrl.get('status', '—')}"))
    pbo = over.get("pbo") or {}
    rows.append(("PBO", _num_text(pbo.get("pbo"), 2) if pbo.get("pbo") is not None else "not computed",
                 f"CSCV over the family's trial test returns (lake evaluation/trials/{family})"
                 if pbo.get("pbo") is not None else pbo.get("reason") or "not recorded"))
    spa = over.get("spa") or {}
    rows.append(("SPA p-value", _num_text(spa.get("pvalue")) if spa.get("pvalue") is not None else "not computed",
                 "Hansen's SPA (arch), stationary bootstrap, against "
                 + ", ".join(overfitting.BENCHMARK_LABELS.get(k, k) for k in (spa.get("pvalues") or {}))
                 if spa.get("pvalue") is not None else spa.get("reason") or "not recorded"))
    stale = None
    if now is not None and now["n_trials"] != recorded_n:
        stale = (f"The trial ledger now holds N = {now['n_trials']} trials of {family!r} "
                 f"(this proposal was deflated for {recorded_n}): DSR with today's family = {now['dsr']:.3f}.")
        rows.insert(1, ("N now (trial ledger)", _num_text(now["n_trials"]), now["n_trials_source"]))
        rows.insert(5, ("DSR now", _num_text(now["dsr"]), f"re-deflated with N = {now['n_trials']}, "
                        f"V = {now['variance_annual']:.4g} ({now['variance_source']})"))
    p_min = float((crit.get("psr") or {}).get("threshold") or 0.95)
    sentences = [overfitting.pbo_sentence(pbo or None), overfitting.spa_sentence(spa or None, 1.0 - p_min)]
    return {"rows": [{"label": a, "value": b, "source": c} for a, b, c in rows], "stale": stale,
            "sentences": sentences, "family_now": fam.as_dict()}


def diagnostic_rows(lake: ParquetLake, proposal: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model's backtests of explicit periods (`usdcop backtest --start/--end`): diagnostics shown
    as such, never part of the vote; IN-SAMPLE when the period touches the model's training data.
    Reviewer-requested periods are listed with the additional backtests instead."""
    from usdcop_platform.adapters import backtests as bt

    rows = []
    for part in bt.model_partitions(lake, proposal["experiment_name"], proposal["model_id"]):
        report = bt.load_backtest_report(lake, proposal["experiment_name"], part)
        if not report or bt.votes(report) or report.get("backtest_request_id") is not None:
            continue
        m = report.get("metrics") or {}
        cov = report.get("coverage")
        in_sample = report.get("out_of_sample") is False
        rows.append({
            "period": f"{report.get('test_start') or '?'} → {report.get('test_end') or '?'}",
            "kind": "IN-SAMPLE" if in_sample else "OUT-OF-SAMPLE",
            "n_bars": report.get("n_bars"),
            "reason": (report.get("in_sample_reason") or "overlaps the training or validation data") if in_sample
            else "explicit period: only the test split and the walk-forward folds vote",
            "coverage": None if not cov else f"coverage {cov['coverage']:.1%} ({cov['covered_sessions']} of "
                                             f"{cov['requested_sessions']} sessions, --allow-partial)",
            "metrics": [fmt_value(m.get(k), METRIC_DISPLAY[k][1]) for k in ADDITIONAL_METRICS],
        })
    return rows


def recompute_production_metrics(series: Any, proposal: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The production model's full metrics from its positions in the backtest series
    (`baseline_position`), by core.backtest with the candidate's costs, capital and confidence and
    the market calendar's annualization: what the evaluation step computes, for proposals that only
    kept the headline deltas. None when the series does not hold those positions."""
    cols = ("close", "session", "baseline_position")
    m = proposal.get("metrics") or {}
    if series is None or any(c not in series.columns for c in cols) or series["baseline_position"].null_count():
        return None
    if not isinstance(m.get("cost_bps"), (int, float)) or not isinstance(m.get("initial_capital"), (int, float)):
        return None
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.backtest import backtest
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.metrics import Annualization

    calendar = TradingCalendar(load_platform_config(settings.config_dir).instrument)
    result = backtest(
        series["close"].to_numpy(), series["baseline_position"].to_numpy(), series["session"].to_numpy(),
        cost_bps=float(m["cost_bps"]), initial_capital=float(m["initial_capital"]),
        annualization=Annualization.from_calendar(calendar), confidence=float(m.get("confidence_level") or 0.95),
    )
    return result.metrics


def baseline_rows(
    proposal: Mapping[str, Any], store: Any = None, recompute: Recompute | None = None
) -> tuple[list[Reference], list[dict[str, Any]]]:
    """The reference columns (production model, buy-and-hold) and the rows of the metrics table."""

    def family_dsr(model_id: str, metrics: Mapping[str, Any]) -> float | None:
        from usdcop_platform.core.trials import deflate_with_family, family_trials

        model = store.models.get(model_id)
        if model is None:
            return None
        family = model["experiment_name"]
        now = deflate_with_family(metrics, family_trials(family, store.trials.family(family)))
        return None if now is None else float(now["dsr"])

    refs = references(proposal, family_dsr if store is not None else None, recompute)
    return refs, comparison_rows(proposal.get("metrics") or {}, refs, fmt_value)


def mlflow_run_url(settings: Settings, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI (USDCOP_MLFLOW_UI_URL), as adapters.tracking links runs
    (imported here, on the first review page: it loads Dagster, which the API does not need)."""
    if not run_id:
        return None
    from usdcop_platform.adapters.tracking import run_url

    return run_url(settings.resolved_mlflow_ui_url, run_id)


def dagster_run_url(settings: Settings, run_id: str | None) -> str | None:
    """The run's page in the Dagster UI (USDCOP_DAGSTER_UI_URL)."""
    if not run_id:
        return None
    return f"{settings.resolved_dagster_ui_url}/runs/{quote(run_id, safe='')}"


def dagster_runs(proposal: Mapping[str, Any], model: Mapping[str, Any] | None, store: Any) -> list[dict[str, str]]:
    """The Dagster runs behind a proposal, as the stored records name them: the training run (the
    model's lineage, else the trial ledger row of the selected seed) and the evaluation run (the
    proposal's lineage). Runs of reviewer-requested backtests are listed with those requests."""
    runs: list[dict[str, str]] = []
    training = ((model or {}).get("lineage") or {}).get("dagster_run_id")
    if not training and model is not None:
        rows = [t for t in store.trials.family(model["experiment_name"])
                if t.get("model_id") == model["model_id"] and t.get("run_id")]
        rows.sort(key=lambda t: not t.get("selected"))
        training = rows[0]["run_id"] if rows else None
    if training:
        runs.append({"what": "training", "run_id": str(training)})
    evaluation = (proposal.get("lineage") or {}).get("dagster_run_id")
    if evaluation and evaluation != training:
        runs.append({"what": "evaluation", "run_id": str(evaluation)})
    return runs


_DATASET_KEYS = ("dataset_hash", "feature_order_hash", "norm_stats_hash", "config_hash", "dataset_id", "train_period")
_MODEL_KEYS = ("model_id", "model_hash", "onnx_hash", "reward_config_hash", "mlflow_run_id", "mlflow_model_version", "seed")
_BACKTEST_KEYS = (
    "backtest_hash", "test_period", "test_start", "test_end", "backtest_partition", "series_path", "cost_bps",
)


def _is_hash(key: str, value: Any) -> bool:
    return key.endswith("_hash") or (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value))


def lineage_chain(proposal: Mapping[str, Any], model: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """dataset → model → backtest nodes, each a list of (label, value, is_hash).

    Values come from the proposal's lineage first, then the registry row, then the proposal;
    lineage keys that fit no node are listed under a fourth node so nothing recorded is hidden.
    """
    lineage = dict(proposal.get("lineage") or {})
    sources: list[Mapping[str, Any]] = [lineage, model or {}, proposal]

    def pick(key: str) -> Any:
        for src in sources:
            v = src.get(key)
            if v not in (None, "", {}, []):
                return v
        return None

    def node(title: str, keys: tuple[str, ...]) -> dict[str, Any]:
        items = []
        for k in keys:
            v = pick(k)
            if v is not None:
                items.append((k, v if isinstance(v, (str, int, float)) else str(v), _is_hash(k, v)))
        return {"title": title, "items": items}

    chain = [node("Dataset", _DATASET_KEYS), node("Model", _MODEL_KEYS), node("Backtest", _BACKTEST_KEYS)]
    placed = set(_DATASET_KEYS + _MODEL_KEYS + _BACKTEST_KEYS)
    rest = [(k, v if isinstance(v, (str, int, float)) else str(v), _is_hash(k, v))
            for k, v in sorted(lineage.items()) if k not in placed and v is not None]
    if rest:
        chain.append({"title": "Other", "items": rest})
    return chain


def _instant(value: Any) -> Any:
    """ISO instants stored in JSON back to datetimes (for display in the market time zone)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def additional_backtest_rows(proposal: Mapping[str, Any], requests: list[Any]) -> list[dict[str, Any]]:
    """One row per period a reviewer asked for: the attached results (DONE), then the requests
    of this proposal not done yet with their status (PENDING, LAUNCHED, FAILED and its error)."""
    rows: list[dict[str, Any]] = []
    attached = set()
    for entry in proposal.get("additional_backtests") or []:
        m = entry.get("metrics") or {}
        attached.add(entry.get("request_id"))
        rows.append(
            {
                "request_id": entry.get("request_id"),
                "start": entry.get("start"),
                "end": entry.get("end"),
                "status": "DONE",
                "requested_by": entry.get("requested_by"),
                "completed_at": _instant(entry.get("completed_at")),
                "dagster_run_id": entry.get("dagster_run_id"),
                "n_bars": m.get("n_bars"),
                "out_of_sample": m.get("out_of_sample"),
                "note": m.get("insufficient"),
                "metrics": [fmt_value(m.get(k), METRIC_DISPLAY[k][1]) for k in ADDITIONAL_METRICS],
            }
        )
    for r in requests:
        if r["id"] in attached or r["status"] == "DONE" or r.get("proposal_id") != proposal["proposal_id"]:
            continue
        rows.append(
            {
                "request_id": r["id"],
                "start": r["start_date"].isoformat(),
                "end": r["end_date"].isoformat(),
                "status": r["status"],
                "requested_by": r["requested_by"],
                "completed_at": None,
                "dagster_run_id": r.get("dagster_run_id"),
                "n_bars": None,
                "out_of_sample": None,
                "note": r.get("error")
                or ("waiting for its Dagster run" if r["status"] == "LAUNCHED"
                    else f"run it with: usdcop backtest --request-id {r['id']}"),
                "metrics": ["—"] * len(ADDITIONAL_METRICS),
            }
        )
    return rows


def find_proposal(store: Any, ident: str) -> Any:
    """A proposal by its id, or by its model id (one proposal per model); 404 otherwise."""
    if not ident.isprintable():
        raise NotFoundError(f"no proposal with id or model id {ident!r}")
    row = store.proposals.get(ident)
    if row is None:
        row = store.proposals.by_model(ident)
    if row is None:
        raise NotFoundError(f"no proposal with id or model id {ident!r}")
    return row


@dataclass
class ExperimentDetail:
    proposal: Any
    model: Any | None
    series: S.DisplaySeries
    trades: list[dict[str, Any]]
    trades_total: int
    trade_pnl: list[float]
    monthly: list[tuple[str, float]]
    criteria: list[dict[str, Any]]
    reasons: dict[str, Any]
    references: list[Reference]
    baseline: list[dict[str, Any]]
    lineage: list[dict[str, Any]]
    mlflow_run_id: str | None
    mlflow_url: str | None
    dagster_runs: list[dict[str, str]] = field(default_factory=list)
    history: list[Any] = field(default_factory=list)
    backtest_requests: list[Any] = field(default_factory=list)
    additional_backtests: list[dict[str, Any]] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


def experiment_detail(
    store: Any, lake: ParquetLake, settings: Settings, ident: str, tz: Any, max_points: int = S.DEFAULT_MAX_POINTS
) -> ExperimentDetail:
    proposal = find_proposal(store, ident)
    model = store.models.get(proposal["model_id"])
    df = S.load_series(lake, proposal)
    trades = S.load_trades(lake, proposal)
    refs, rows = baseline_rows(proposal, store, lambda: recompute_production_metrics(df, proposal, settings))
    crit = criteria_rows(proposal.get("criteria"))
    run_id = (proposal.get("lineage") or {}).get("mlflow_run_id") or (model or {}).get("mlflow_run_id")
    requests = store.backtest_requests.list(model_id=proposal["model_id"])
    return ExperimentDetail(
        proposal=proposal,
        model=model,
        series=S.display_series(df, max_points),
        trades=S.trade_records(trades, max_points),
        trades_total=0 if trades is None else trades.height,
        trade_pnl=S.trade_pnl(trades),
        monthly=S.monthly_returns(df, tz),
        criteria=crit,
        reasons=decisive_reasons(proposal.get("reasons"), crit),
        references=refs,
        baseline=rows,
        lineage=lineage_chain(proposal, model),
        mlflow_run_id=run_id,
        mlflow_url=mlflow_run_url(settings, run_id),
        dagster_runs=[{**r, "url": dagster_run_url(settings, r["run_id"])} for r in dagster_runs(proposal, model, store)],
        history=store.audit.list(limit=100, proposal_id=proposal["proposal_id"]),
        backtest_requests=requests,
        additional_backtests=additional_backtest_rows(proposal, requests),
        statistics=statistics_view(proposal, store),
        diagnostics=diagnostic_rows(lake, proposal),
    )
