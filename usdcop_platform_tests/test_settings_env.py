"""Settings.as_env: a child process (the demo's `usdcop serve`) reads back exactly these settings."""

from __future__ import annotations

import json
import subprocess
import sys

from usdcop_platform.settings import Settings

_DUMP = ("import json; from usdcop_platform.settings import Settings; s = Settings(); "
         "print(json.dumps([s.as_env({}), s.resolved_database_url]))")


def test_a_child_process_reads_the_same_settings(tmp_path) -> None:
    settings = Settings(USDCOP_DATA_DIR=tmp_path / "lake", USDCOP_STATE_DIR=tmp_path / "state",
                        DATABASE_URL="postgresql+psycopg://u@db/usdcop", DATABASE_PASSWORD="s3cret",
                        USDCOP_SYNTHETIC_EDGE=0.5)
    # the parent's environment says otherwise, and names a Redis the settings do not have
    base = {"PATH": "/usr/bin:/bin", "USDCOP_DATA_DIR": "/elsewhere", "REDIS_URL": "redis://stale:6379/0"}
    env = settings.as_env(base)
    assert env["DATABASE_PASSWORD"] == "s3cret" and "REDIS_URL" not in env and env["PATH"] == base["PATH"]
    child = subprocess.run([sys.executable, "-c", _DUMP], env=env, capture_output=True, text=True, check=True)
    assert json.loads(child.stdout) == [settings.as_env({}), "postgresql+psycopg://u:s3cret@db/usdcop"]
