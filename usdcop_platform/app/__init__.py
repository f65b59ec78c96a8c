"""Application layer: one module per use case. Use cases take their adapters and config as
arguments and orchestrate core/ and adapters/; the shells (Dagster assets, CLI, API, benchmarks)
call them and hold no logic of their own."""
