"""Live journal: one append-only row per live bar (what `usdcop replay` needs to reproduce it),
instead of `<risk_key>@<bar ISO>` rows of the upsertable `risk_state` table. The journal rows
already in `risk_state` move here (their columns and `extra` merged back into the one document
the live cycle wrote); rows whose key is not `<risk_key>@<ISO instant>` stay where they are.

Revision ID: 0005_live_journal
Revises: 0004_trial_ledger
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_live_journal"
down_revision: str | Sequence[str] | None = "0004_trial_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (a migration never imports the live ORM).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

SQLITE_APPEND_ONLY = """
CREATE TRIGGER trg_live_journal_no_{op_lower}
BEFORE {op} ON live_journal
BEGIN
    SELECT RAISE(ABORT, 'live_journal is append-only: {op} is not allowed');
END
"""

PG_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION live_journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'live_journal is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

# The journal rows of risk_state: `<risk_key>@<ISO instant>` (the live cycle wrote them so before this revision).
PG_JOURNAL_ROW = "key ~ '^[^@]+@[0-9]{4}-[0-9]{2}-[0-9]{2}T'"
SQLITE_JOURNAL_ROW = "key GLOB '[^@]*@[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*'"


def _pg_iso(column: str) -> str:
    """A timestamptz as Python's datetime.isoformat() of the UTC instant writes it."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN date_part('microseconds', {column})::int "
            f"% 1000000 = 0 THEN '' ELSE to_char({utc}, '.US') END || '+00:00'")


def _sqlite_iso(column: str) -> str:
    """SQLAlchemy's SQLite text 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) as datetime.isoformat() writes it."""
    return (f"replace(substr({column}, 1, 19), ' ', 'T') || CASE WHEN coalesce(substr({column}, 21), '') "
            f"IN ('', '000000') THEN '' ELSE '.' || substr({column}, 21) END || '+00:00'")


# The columns of a risk_state row in the JSON form the live cycle wrote (RiskState.to_dict()).
_PG_COLUMNS = (
    "'trading_date', to_char(trading_date, 'YYYY-MM-DD'), 'equity', equity, 'peak_equity', peak_equity, "
    "'daily_pnl_pct', daily_pnl_pct, 'drawdown_pct', drawdown_pct, 'trades_today', trades_today, "
    "'consecutive_losses', consecutive_losses, 'breaker_active', breaker_active, 'breaker_reason', breaker_reason, "
    f"'cooldown_until', CASE WHEN cooldown_until IS NULL THEN NULL ELSE {_pg_iso('cooldown_until')} END"
)
_SQLITE_COLUMNS = (
    "'$.trading_date', trading_date, '$.equity', equity, '$.peak_equity', peak_equity, "
    "'$.daily_pnl_pct', daily_pnl_pct, '$.drawdown_pct', drawdown_pct, '$.trades_today', trades_today, "
    "'$.consecutive_losses', consecutive_losses, "
    "'$.breaker_active', json(CASE WHEN breaker_active THEN 'true' ELSE 'false' END), "
    "'$.breaker_reason', breaker_reason, "
    f"'$.cooldown_until', CASE WHEN cooldown_until IS NULL THEN NULL ELSE {_sqlite_iso('cooldown_until')} END"
)

# Plain SQL (no Python reads), so the offline DDL (`usdcop db ddl`) carries the move as well.
MOVE = {
    "postgresql": f"""
INSERT INTO live_journal (risk_key, bar_time, journal, created_at)
SELECT split_part(key, '@', 1), CAST(substr(key, strpos(key, '@') + 1) AS TIMESTAMP WITH TIME ZONE),
       coalesce(extra, '{{}}'::jsonb) || jsonb_build_object({_PG_COLUMNS}), updated_at
FROM risk_state WHERE {PG_JOURNAL_ROW}
ORDER BY substr(key, strpos(key, '@') + 1)
""",
    "sqlite": f"""
INSERT INTO live_journal (risk_key, bar_time, journal, created_at)
SELECT substr(key, 1, instr(key, '@') - 1),
       strftime('%Y-%m-%d %H:%M:%S', substr(key, instr(key, '@') + 1))
           || '.' || substr(strftime('%f', substr(key, instr(key, '@') + 1)), 4) || '000',
       json_set(coalesce(extra, '{{}}'), {_SQLITE_COLUMNS}), updated_at
FROM risk_state WHERE {SQLITE_JOURNAL_ROW}
ORDER BY substr(key, instr(key, '@') + 1)
""",
}
DELETE_MOVED = {"postgresql": f"DELETE FROM risk_state WHERE {PG_JOURNAL_ROW}",
                "sqlite": f"DELETE FROM risk_state WHERE {SQLITE_JOURNAL_ROW}"}
# downgrade: back into risk_state, the whole document in `extra` (the risk repository's load()
# merges `extra` over the columns, so it returns the journal's values)
MOVE_BACK = {
    "postgresql": f"INSERT INTO risk_state (key, extra, updated_at) "
                  f"SELECT risk_key || '@' || {_pg_iso('bar_time')}, journal, created_at FROM live_journal",
    "sqlite": f"INSERT INTO risk_state (key, extra, updated_at) "
              f"SELECT risk_key || '@' || {_sqlite_iso('bar_time')}, journal, created_at FROM live_journal",
}


def _dialect() -> str:
    name = op.get_context().dialect.name
    if name not in MOVE:  # pragma: no cover - only the two supported dialects
        raise NotImplementedError(f"live_journal is not defined for dialect {name!r}")
    return name


def upgrade() -> None:
    dialect = _dialect()
    op.create_table(
        "live_journal",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("risk_key", sa.String(64), nullable=False),
        sa.Column("bar_time", TS, nullable=False),
        sa.Column("journal", JSON, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_live_journal"),
        sa.UniqueConstraint("risk_key", "bar_time", name="uq_live_journal_risk_key_bar_time"),
    )
    op.execute(MOVE[dialect])
    op.execute(DELETE_MOVED[dialect])
    if dialect == "sqlite":
        for stmt in ("UPDATE", "DELETE"):
            op.execute(SQLITE_APPEND_ONLY.format(op=stmt, op_lower=stmt.lower()))
    else:
        op.execute(PG_APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER trg_live_journal_no_update_delete BEFORE UPDATE OR DELETE "
            "ON live_journal FOR EACH ROW EXECUTE FUNCTION live_journal_append_only()"
        )
        op.execute(
            "CREATE TRIGGER trg_live_journal_no_truncate BEFORE TRUNCATE "
            "ON live_journal FOR EACH STATEMENT EXECUTE FUNCTION live_journal_append_only()"
        )


def downgrade() -> None:
    dialect = _dialect()
    op.execute(MOVE_BACK[dialect])
    op.drop_table("live_journal")  # its triggers go with it
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS live_journal_append_only()")
