"""Search faults against the real PostgreSQL: the SQL store's connections dropped during a study
(every backend of the study's connections terminated, as a server restart does), and a study
resumed after its driver process was killed. Slow and bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
import sqlalchemy as sa

from usdcop_platform.adapters import optuna_store
from usdcop_platform.adapters.store import DatabaseUnavailable
from usdcop_platform.bench.tcp_proxy import TcpProxy
from usdcop_platform.app import search as app_search
from usdcop_platform.app.execution import InProcessExecutor
from usdcop_platform_tests.app.search_support import inputs, recorder, small_experiment

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def exp(platform_config):
    return small_experiment(platform_config.experiment("smoke"))


@pytest.fixture
def tagged_url(postgres_url):
    """The test's schema URL with an application_name of its own: only these backends get killed."""
    name = f"usdcop_search_fault_{uuid.uuid4().hex[:8]}"
    return f"{postgres_url}&application_name={name}", name


def _terminate(admin: sa.Engine, app_name: str) -> int:
    with admin.begin() as conn:
        return len(conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n AND pid <> pg_backend_pid()"
        ), {"n": app_name}).all())


@pytest.fixture
def proxied_url(postgres_url):
    """The test's schema through a TCP proxy the test can stop (the server away) and start again."""
    proxy = TcpProxy("127.0.0.1", 5432).start()
    yield proxy, postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    proxy.stop()


def test_a_study_opened_while_the_server_is_away_opens_once_it_is_back(proxied_url, exp) -> None:
    proxy, url = proxied_url
    proxy.stop()
    back = threading.Timer(1.0, proxy.start)
    back.start()
    t0 = time.monotonic()
    try:
        study = optuna_store.open_study(url, "opened-during-a-restart", exp.search)
    finally:
        back.join()
    assert time.monotonic() - t0 >= 0.9 and study.study_name == "opened-during-a-restart"
    assert optuna_store.open_study(url, "opened-during-a-restart", exp.search)._study_id == study._study_id


def test_a_study_whose_server_stays_away_fails_with_a_clear_error(proxied_url, exp) -> None:
    proxy, url = proxied_url
    proxy.stop()
    with pytest.raises(DatabaseUnavailable, match="database unavailable"):
        optuna_store.open_study(url, "never-opened", exp.search)


def test_the_drivers_reads_of_a_study_wait_for_the_server(proxied_url, exp) -> None:
    """A study's trials read while the server is away (the driver between two trials): read
    again once it is back; an error that is not the connection's is raised at once."""
    proxy, url = proxied_url
    study = optuna_store.open_study(url, "read-during-a-restart", exp.search)
    proxy.stop()
    back = threading.Timer(1.0, proxy.start)
    back.start()
    try:
        assert optuna_store.retrying(url, lambda: app_search.finished_trials(study)) == []
    finally:
        back.join()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("not a connection error")

    with pytest.raises(ValueError, match="not a connection error"):
        optuna_store.retrying(url, broken)
    assert calls == [1]


def test_store_connections_dropped_during_a_study(tmp_path, exp, tagged_url) -> None:
    url, app_name = tagged_url
    admin = sa.create_engine(url.split("?")[0])
    inp = inputs(exp, url)
    rec = recorder(tmp_path, exp, url)
    terminated: list[int] = []
    stop = threading.Event()

    def restarts() -> None:  # three "restarts" while trials run, whatever the machine's speed
        while len(terminated) < 3 and not stop.wait(0.5):
            n = _terminate(admin, app_name)
            if n:  # the study held connections: they were cut
                terminated.append(n)
                stop.wait(1.0)

    th = threading.Thread(target=restarts, daemon=True)
    th.start()
    try:
        report = app_search.run_search(inp, trials=4, workers=1, executor=InProcessExecutor(), recorder=rec)
    finally:
        stop.set()
        th.join(timeout=10)
        admin.dispose()
    assert sum(terminated) >= 1, terminated  # connections really were cut
    # The study finishes its 4 trials. A trial whose own commit was cut can fail (Optuna raises
    # StorageInternalError and marks it FAIL); it is replaced, never counted as a model trial.
    assert report.finished == 4
    assert all("Storage" in f or "OperationalError" in f for f in report.task_failures), report.task_failures
    rows = [r for r in rec.store.trials.family(exp.name) if r["kind"] == "search_trial"]
    assert len(rows) == report.complete + report.pruned == 4


DRIVER = """
import sys, time
from usdcop_platform.app import search as app_search
from usdcop_platform.app.execution import InProcessExecutor
from usdcop_platform.contracts.platform import load_platform_config
from usdcop_platform_tests.app.search_support import inputs, small_experiment
exp = small_experiment(load_platform_config().experiment("smoke"), budget=4096, eval_every=512)
app_search.run_search(inputs(exp, sys.argv[1]), trials=4, workers=1, executor=InProcessExecutor())
"""


def test_study_resumed_after_its_driver_died(tmp_path, exp, postgres_url) -> None:
    slow = small_experiment(exp, budget=4096, eval_every=512)
    inp = inputs(slow, postgres_url)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, postgres_url], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = optuna_store.open_study(postgres_url, inp.study_name, slow.search)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # kill it in the middle of its second trial
            trials = study.get_trials(deepcopy=False)
            if len(app_search.finished_trials(study)) >= 1 and any(
                t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values for t in trials
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the driver never reached its second trial")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
    before = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    assert "RUNNING" in before.values()

    rec = recorder(tmp_path, slow, postgres_url)
    report = app_search.run_search(inp, trials=4, workers=1, executor=InProcessExecutor(), recorder=rec)
    after = {t["number"]: t["state"] for t in report.trials}
    assert report.finished == 4
    # finished trials of the dead driver are kept (not rerun), the orphaned one is marked FAIL
    assert all(after[n] == s for n, s in before.items() if s in ("COMPLETE", "PRUNED"))
    orphan = next(n for n, s in before.items() if s == "RUNNING")
    assert after[orphan] == "FAIL"
    # every finished trial (including the dead driver's) is in the ledger exactly once
    rows = [r for r in rec.store.trials.family(slow.name) if r["kind"] == "search_trial"]
    assert sorted(r["details"]["number"] for r in rows) == sorted(n for n, s in after.items() if s in ("COMPLETE", "PRUNED"))


def test_a_failure_raised_while_handling_another_names_both() -> None:
    """Optuna asserts in its own `finally` when a cut connection lost a trial's commit: the report
    names the storage error underneath, not only "Should not reach."."""
    from optuna.exceptions import StorageInternalError

    try:
        try:
            raise StorageInternalError("An exception is raised during the commit.")
        finally:
            assert False, "Should not reach."  # noqa: B011 - what optuna's _optimize does
    except AssertionError as exc:
        text = app_search.failure_text(exc)
    assert text.startswith("AssertionError: Should not reach.")
    assert "while handling StorageInternalError: An exception is raised during the commit." in text
    assert app_search.failure_text(ValueError("plain")) == "ValueError: plain"
