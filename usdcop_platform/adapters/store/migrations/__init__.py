"""Alembic migrations of the application tables (run programmatically by store.migrate)."""
