"""`usdcop bench NAME [--json FILE]`."""

from __future__ import annotations

from pathlib import Path

import typer

from usdcop_platform.bench.harness import BENCHMARKS, BenchResult, render_table, run_benchmark
from usdcop_platform.commands.common import console, err_console


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        name: str = typer.Argument(..., help=f"one of: {', '.join(BENCHMARKS)}"),
        json_file: Path = typer.Option(None, "--json", help="write results here (default bench/results/NAME.json)"),
        quick: bool = typer.Option(False, "--quick", help="smaller sizes, for a smoke run"),
    ) -> None:
        """Run a benchmark side by side with its peer; print a table and write JSON."""
        if name not in BENCHMARKS:
            err_console.print(f"[bold red]error:[/] unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
            raise typer.Exit(2)
        out = json_file or Path("bench/results") / f"{name}.json"
        payload = run_benchmark(name, out, quick=quick)
        console.print(render_table(name, [BenchResult(**r) for r in payload["results"]]))
        console.print(f"JSON written to {out}")
