"""The `usdcop` command. Each domain registers its commands from usdcop_platform/commands/."""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup


def _empty_flag_metavars(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


def _no_flag_types(command: Any) -> None:
    """A flag takes no value: give it (and `--help`) an empty metavar, recursively.

    typer 0.29's rich help prints every option's type, flags included (`--json <bool>`,
    `--help <bool>`), which reads as if the flag needed a value; the plain help already omits it."""
    import typer._click.core as click_core

    _empty_flag_metavars(command.params)
    help_option = command.get_help_option(click_core.Context(command))  # created once, cached
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _no_flag_types(sub)


class UsdcopGroup(TyperGroup):
    """The root `usdcop` group: typer's group, with flags shown as flags in every command's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _no_flag_types(self)

    def get_params(self, ctx: Any) -> list[Any]:
        # typer appends --install-completion / --show-completion after the group is built
        return _empty_flag_metavars(super().get_params(ctx))


app = typer.Typer(
    name="usdcop",
    cls=UsdcopGroup,
    help="USD/COP RL trading platform: ingest, features, training, backtests, approvals, live signals.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main(ctx: typer.Context) -> None:
    """Route Dagster's and the libraries' logs to the log file for the whole invocation."""
    from usdcop_platform.commands.common import log_file, logs_to_file
    from usdcop_platform.settings import get_settings

    ctx.with_resource(logs_to_file(log_file(get_settings())))


# Modules under usdcop_platform.commands, each exposing register(app: typer.Typer).
COMMAND_MODULES = (
    "config_cmd",
    "db",
    "data",
    "features",
    "training",
    "tune",
    "evaluation",
    "api",
    "live",
    "monitoring",
    "bench",
    "run",
    "demo",
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"usdcop_platform.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"usdcop_platform.commands.{_name}":
            raise
        continue  # a domain not built yet registers nothing
    _module.register(app)


def main() -> None:  # pragma: no cover - console entry (tested in a subprocess)
    try:
        app()
        code: object = 0
    except SystemExit as exc:  # click's standalone mode always ends here
        code = exc.code
    exit_now(code)


def exit_now(code: object) -> None:
    """Exit as a normal exit would, minus the interpreter's teardown of every module and object.

    Tearing down Dagster, polars, pandas and torch takes 0.5-1.5 s after the command's last line;
    nothing in it matters once the threads are done and the exit handlers have run: those still run
    here (MLflow's and Ray's flushes, multiprocessing's children, weakref finalizers, logging), and
    stdio is flushed. SQLite and the lake commit before a command reports success."""
    import atexit
    import os
    import sys
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # a profiler or debugger reports after the program returns: let it
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():  # what the interpreter waits for first
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers a normal exit runs, in the same order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head): nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
