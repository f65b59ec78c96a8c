"""Optuna studies in the platform's SQL database (RDBStorage): SQLite locally, PostgreSQL in production.

Every worker, on any machine, opens the same storage by URL, so trials of one study can run
anywhere and a study outlives the process that started it:

  * heartbeats: a running trial writes a heartbeat every HEARTBEAT_SECONDS; a trial whose heartbeat
    is older than GRACE_SECONDS (its worker died) is marked FAIL by the next worker that starts a
    trial (or by `fail_stale`), and RetryHeartbeatStaleTrialCallback queues its parameters once more;
  * `pool_pre_ping`: a connection the database dropped (server restart, terminated backend) is
    replaced before use instead of failing the trial's next write;
  * the driver's own work on a study (opening it, reading and settling its trials: `retrying`) is
    run again (RETRIES, backoff) when its connection is cut or the server is away, then fails
    with the store's DatabaseUnavailable naming the database.

Optuna keeps its own tables (studies, trials, ...) and its own `alembic_version` table; the
platform's migrations use `usdcop_alembic_version`, and Dagster's PostgreSQL storage lives in its
own database (docker-compose.yml), so the three never meet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from usdcop_platform.adapters.store._sql import retry_transient
from usdcop_platform.contracts.search import SearchConfig

if TYPE_CHECKING:
    import optuna

T = TypeVar("T")

HEARTBEAT_SECONDS = 2
GRACE_SECONDS = 6
MAX_RETRY = 1  # a failed trial's parameters are tried once more, then the search moves on
RETRIES, RETRY_DELAY_S, RETRY_MAX_DELAY_S = 3, 0.5, 2.0  # the driver's study work during a restart (retrying)


def optuna_url(database_url: str) -> str:
    """The platform URL as SQLAlchemy expects it (psycopg 3 for postgresql:// as the store does)."""
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return database_url


def storage(database_url: str) -> "optuna.storages.RDBStorage":
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = optuna_url(database_url)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several worker processes write one file
    return RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
    )


def open_study(database_url: str, name: str, space: SearchConfig) -> "optuna.Study":
    """Create the study or load it (resume): TPE seeded from the space, MedianPruner over the
    validation scores reported at each evaluation step."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=space.sampler_seed, n_startup_trials=space.startup_trials)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=space.pruner.startup_trials, n_warmup_steps=space.pruner.warmup_evaluations
    )
    # Opening is idempotent (load_if_exists): a connection cut mid-open (a server restart; the
    # pre-ping cannot cover the gap between its ping and the next statement) opens it again.
    return retrying(database_url, lambda: optuna.create_study(
        study_name=name, storage=storage(database_url), sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    ))


def retrying(database_url: str, fn: Callable[[], T]) -> T:
    """`fn` (idempotent work on a study: opening it, reading its trials, failing stale ones), run
    again with backoff while its connection is cut or the database is busy (RETRIES times); then
    the store's DatabaseUnavailable/DatabaseBusy, naming the database."""

    def attempt() -> T:
        try:
            return fn()
        except Exception as exc:
            transient = _transient(database_url, exc)
            if transient is not None:
                raise transient from exc
            raise

    return retry_transient(attempt, RETRIES, RETRY_DELAY_S, RETRY_MAX_DELAY_S)


def _transient(database_url: str, exc: BaseException) -> Exception | None:
    """The store's translation (DatabaseUnavailable for a dropped connection, DatabaseBusy for a
    busy database, else None), whether SQLAlchemy raised the error or Optuna wrapped it
    (StorageInternalError from the SQLAlchemy error)."""
    import sqlalchemy as sa

    from usdcop_platform.adapters.store.engine import translate

    cause = exc if isinstance(exc, sa.exc.SQLAlchemyError) else exc.__cause__
    return translate(database_url, cause) if isinstance(cause, sa.exc.SQLAlchemyError) else None


def fail_stale(study: "optuna.Study") -> list[int]:
    """Mark RUNNING trials whose worker stopped heartbeating as FAIL (retried once); their numbers."""
    import optuna
    from optuna.storages import fail_stale_trials

    before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    fail_stale_trials(study)
    _fail_never_heartbeated(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    return sorted(before - after)


def _fail_never_heartbeated(study: "optuna.Study") -> None:
    """A worker killed before its first heartbeat leaves a RUNNING trial without a heartbeat row,
    which Optuna never calls stale: fail it once it started longer ago than the grace period."""
    from datetime import datetime, timedelta

    import optuna
    import sqlalchemy as sa

    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return
    cutoff = datetime.now() - timedelta(seconds=GRACE_SECONDS)  # Optuna stamps datetime_start with local now()
    old = {t._trial_id: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
           if t.datetime_start is not None and t.datetime_start < cutoff}
    if not old:
        return
    with backend.engine.connect() as conn:
        beating = {row[0] for row in conn.execute(
            sa.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)), {"ids": list(old)})}
    for trial_id in set(old) - beating:
        try:
            backend.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - finished meanwhile by its worker: nothing to fail
            pass


def settle(study: "optuna.Study", *, poll_s: float = 0.5) -> list[int]:
    """Before a driver reports: wait (at most one grace period) for RUNNING trials left by a dead
    driver to go stale, and mark them FAIL, so a report never shows an orphan as still running.
    Trials of a live concurrent driver keep heartbeating and stay RUNNING."""
    import time

    import optuna

    failed = fail_stale(study)
    deadline = time.monotonic() + GRACE_SECONDS + 1
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) and time.monotonic() < deadline:
        time.sleep(poll_s)
        failed += fail_stale(study)
    return failed
