"""Pure domain logic: no Dagster, no database, no network."""
