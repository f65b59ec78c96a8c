"""The console entry (`usdcop_platform.cli.main`) exits without the interpreter's teardown but with
everything a normal exit does that matters: exit handlers, non-daemon threads, flushed output, the
command's exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from usdcop_platform import cli
out = Path(sys.argv[1])
atexit.register(lambda: out.write_text(out.read_text() + "atexit\\n"))
def slow() -> None:
    time.sleep(0.3)
    out.write_text(out.read_text() + "thread\\n")
out.write_text("")
threading.Thread(target=slow).start()
sys.argv = ["usdcop", *sys.argv[2:]]
cli.main()
"""


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "events.txt"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    return proc, out.read_text().splitlines()


def test_a_successful_command_runs_exit_handlers_and_waits_for_threads(tmp_path) -> None:
    proc, events = _run(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "ingest" in proc.stdout  # output flushed
    assert events == ["thread", "atexit"]  # threads first, then the exit handlers, as a normal exit


def test_a_failing_command_keeps_its_exit_code(tmp_path) -> None:
    proc, events = _run(tmp_path, "no-such-command")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr
    assert events == ["thread", "atexit"]
