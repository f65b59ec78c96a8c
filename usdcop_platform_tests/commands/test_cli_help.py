"""Every command's help renders, and a flag reads as a flag (`--json`, never `--json <bool>`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from usdcop_platform.cli import app


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield prefix, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*prefix, name))


COMMANDS = list(_paths(typer.main.get_command(app)))


def test_the_cli_has_its_commands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "run", "ingest", "quarantine list", "demo", "train", "replay"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "usdcop")
def test_help_shows_no_bool_metavar(path: tuple[str, ...]) -> None:
    # narrow and wide: rich lays the options panel out differently
    for columns in ("80", "200"):
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": columns})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, result.output
        assert "<%Y" not in result.output, result.output  # a date option shows YYYY-MM-DD, not strptime codes
        assert "--help" in result.output


def test_every_boolean_option_is_a_flag() -> None:
    for path, command in COMMANDS:
        for param in command.params:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            if annotation is bool and param.param_type_name == "option":
                assert param.is_flag, f"usdcop {' '.join(path)} {param.opts}: a bool option must be a flag"


def test_a_flag_takes_no_value() -> None:
    """`--json` before another option does not swallow it (a flag, not an option with a value)."""
    result = CliRunner().invoke(app, ["quarantine", "list", "--json", "--limit", "x"])
    # had --json swallowed "--limit", click would complain about an extra argument "x"
    assert result.exit_code == 2 and "--limit" in result.output, result.output
    assert "extra argument" not in result.output, result.output
