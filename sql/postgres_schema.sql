-- PostgreSQL DDL of the usdcop_platform application tables.
-- GENERATED from the Alembic migrations in usdcop_platform/adapters/store/migrations/
-- by `usdcop db ddl --out sql/postgres_schema.sql`. Do not edit: a test fails when it drifts.

BEGIN;

CREATE TABLE usdcop_alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT usdcop_alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001_initial

CREATE TABLE model_registry (
    model_id VARCHAR(128) NOT NULL,
    experiment_name VARCHAR(128) NOT NULL,
    experiment_version VARCHAR(64) NOT NULL,
    stage VARCHAR(16) DEFAULT 'staging' NOT NULL,
    servable BOOLEAN DEFAULT true NOT NULL,
    model_hash VARCHAR(64) NOT NULL,
    onnx_hash VARCHAR(64),
    norm_stats_hash VARCHAR(64),
    feature_order_hash VARCHAR(64),
    dataset_hash VARCHAR(64),
    config_hash VARCHAR(64),
    reward_config_hash VARCHAR(64),
    mlflow_run_id VARCHAR(64),
    mlflow_model_version VARCHAR(32),
    artifact_dir TEXT,
    model_path TEXT,
    onnx_path TEXT,
    norm_stats_path TEXT,
    metrics JSONB NOT NULL,
    lineage JSONB NOT NULL,
    parity JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    promoted_at TIMESTAMP WITH TIME ZONE,
    archived_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_model_registry PRIMARY KEY (model_id),
    CONSTRAINT ck_model_registry_stage CHECK (stage IN ('staging', 'production', 'archived'))
);

CREATE INDEX ix_model_registry_experiment ON model_registry (experiment_name, experiment_version);

CREATE UNIQUE INDEX uq_model_registry_single_production ON model_registry (stage) WHERE stage = 'production';

CREATE TABLE registry_version (
    id INTEGER NOT NULL,
    version BIGINT DEFAULT '0' NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_registry_version PRIMARY KEY (id),
    CONSTRAINT ck_registry_version_single_row CHECK (id = 1)
);

INSERT INTO registry_version (id, version) VALUES (1, 0);

CREATE TABLE promotion_proposals (
    proposal_id VARCHAR(64) NOT NULL,
    model_id VARCHAR(128) NOT NULL,
    experiment_name VARCHAR(128) NOT NULL,
    experiment_version VARCHAR(64) NOT NULL,
    recommendation VARCHAR(16) NOT NULL,
    confidence FLOAT NOT NULL,
    status VARCHAR(32) DEFAULT 'PENDING_APPROVAL' NOT NULL,
    reasons JSONB NOT NULL,
    criteria JSONB NOT NULL,
    metrics JSONB NOT NULL,
    baseline_comparison JSONB NOT NULL,
    lineage JSONB NOT NULL,
    statistical_statement TEXT,
    backtest_hash VARCHAR(64),
    test_start DATE,
    test_end DATE,
    series_path TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    expires_at TIMESTAMP WITH TIME ZONE,
    decided_at TIMESTAMP WITH TIME ZONE,
    decided_by VARCHAR(128),
    decision_notes TEXT,
    CONSTRAINT pk_promotion_proposals PRIMARY KEY (proposal_id),
    CONSTRAINT ck_promotion_proposals_recommendation CHECK (recommendation IN ('PROMOTE', 'REVIEW', 'REJECT')),
    CONSTRAINT ck_promotion_proposals_status CHECK (status IN ('PENDING_APPROVAL', 'APPROVED', 'REJECTED', 'MORE_TESTS_REQUESTED', 'EXPIRED')),
    CONSTRAINT fk_promotion_proposals_model_id_model_registry FOREIGN KEY(model_id) REFERENCES model_registry (model_id),
    CONSTRAINT uq_promotion_proposals_model_id UNIQUE (model_id)
);

CREATE INDEX ix_promotion_proposals_status ON promotion_proposals (status);

CREATE TABLE approval_audit_log (
    id BIGSERIAL NOT NULL,
    action VARCHAR(32) NOT NULL,
    model_id VARCHAR(128),
    proposal_id VARCHAR(64),
    reviewer VARCHAR(128) NOT NULL,
    notes TEXT DEFAULT '' NOT NULL,
    previous_production_model_id VARCHAR(128),
    details JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_approval_audit_log PRIMARY KEY (id)
);

CREATE INDEX ix_approval_audit_log_model_id ON approval_audit_log (model_id);

CREATE INDEX ix_approval_audit_log_created_at ON approval_audit_log (created_at);

CREATE FUNCTION approval_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval_audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER trg_approval_audit_log_no_update_delete BEFORE UPDATE OR DELETE ON approval_audit_log FOR EACH ROW EXECUTE FUNCTION approval_audit_log_append_only();

CREATE TRIGGER trg_approval_audit_log_no_truncate BEFORE TRUNCATE ON approval_audit_log FOR EACH STATEMENT EXECUTE FUNCTION approval_audit_log_append_only();

CREATE TABLE experiment_contracts (
    name VARCHAR(128) NOT NULL,
    version VARCHAR(64) NOT NULL,
    config_hash VARCHAR(64) NOT NULL,
    reward_config_hash VARCHAR(64) NOT NULL,
    feature_order_hash VARCHAR(64) NOT NULL,
    content JSONB NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_experiment_contracts PRIMARY KEY (name, version)
);

CREATE TABLE trading_signals (
    id BIGSERIAL NOT NULL,
    bar_time TIMESTAMP WITH TIME ZONE NOT NULL,
    session_date DATE NOT NULL,
    model_id VARCHAR(128) NOT NULL,
    role VARCHAR(16) NOT NULL,
    model_hash VARCHAR(64),
    action SMALLINT NOT NULL,
    prob_sell FLOAT NOT NULL,
    prob_hold FLOAT NOT NULL,
    prob_buy FLOAT NOT NULL,
    confidence FLOAT NOT NULL,
    raw_action SMALLINT NOT NULL,
    risk_status VARCHAR(16) NOT NULL,
    failing_check VARCHAR(64),
    position_recommendation FLOAT DEFAULT '0' NOT NULL,
    feature_hash VARCHAR(64),
    feature_order_hash VARCHAR(64),
    norm_stats_hash VARCHAR(64),
    features JSONB NOT NULL,
    latency_ms FLOAT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_trading_signals PRIMARY KEY (id),
    CONSTRAINT ck_trading_signals_role CHECK (role IN ('production', 'shadow')),
    CONSTRAINT ck_trading_signals_action CHECK (action IN (0, 1, 2)),
    CONSTRAINT ck_trading_signals_risk_status CHECK (risk_status IN ('APPROVED', 'REJECTED')),
    CONSTRAINT uq_trading_signals_bar_time_model_id UNIQUE (bar_time, model_id)
);

CREATE INDEX ix_trading_signals_session_date ON trading_signals (session_date);

CREATE INDEX ix_trading_signals_model_id ON trading_signals (model_id);

CREATE TABLE risk_state (
    key VARCHAR(64) NOT NULL,
    trading_date DATE,
    equity FLOAT,
    peak_equity FLOAT,
    daily_pnl_pct FLOAT DEFAULT '0' NOT NULL,
    drawdown_pct FLOAT DEFAULT '0' NOT NULL,
    trades_today INTEGER DEFAULT '0' NOT NULL,
    consecutive_losses INTEGER DEFAULT '0' NOT NULL,
    breaker_active BOOLEAN DEFAULT false NOT NULL,
    breaker_reason TEXT,
    cooldown_until TIMESTAMP WITH TIME ZONE,
    extra JSONB NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_risk_state PRIMARY KEY (key)
);

CREATE TABLE api_keys (
    id BIGSERIAL NOT NULL,
    name VARCHAR(128) NOT NULL,
    role VARCHAR(16) NOT NULL,
    key_prefix VARCHAR(32) NOT NULL,
    key_hash VARCHAR(160) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    revoked_at TIMESTAMP WITH TIME ZONE,
    last_used_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT ck_api_keys_role CHECK (role IN ('viewer', 'reviewer', 'admin')),
    CONSTRAINT uq_api_keys_name UNIQUE (name)
);

CREATE INDEX ix_api_keys_key_prefix ON api_keys (key_prefix);

CREATE TABLE backtest_requests (
    id BIGSERIAL NOT NULL,
    proposal_id VARCHAR(64),
    model_id VARCHAR(128) NOT NULL,
    start_date DATE NOT NULL,
    end_date DATE NOT NULL,
    status VARCHAR(16) DEFAULT 'PENDING' NOT NULL,
    dagster_run_id VARCHAR(64),
    requested_by VARCHAR(128) NOT NULL,
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_backtest_requests PRIMARY KEY (id),
    CONSTRAINT ck_backtest_requests_status CHECK (status IN ('PENDING', 'LAUNCHED', 'DONE', 'FAILED')),
    CONSTRAINT fk_backtest_requests_model_id_model_registry FOREIGN KEY(model_id) REFERENCES model_registry (model_id),
    CONSTRAINT fk_backtest_requests_proposal_id_promotion_proposals FOREIGN KEY(proposal_id) REFERENCES promotion_proposals (proposal_id)
);

CREATE INDEX ix_backtest_requests_status ON backtest_requests (status);

CREATE TABLE quarantine (
    id BIGSERIAL NOT NULL,
    dataset VARCHAR(64) NOT NULL,
    partition VARCHAR(64),
    rule VARCHAR(64) NOT NULL,
    field VARCHAR(128),
    value TEXT,
    row JSONB NOT NULL,
    detected_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_quarantine PRIMARY KEY (id)
);

CREATE INDEX ix_quarantine_dataset_partition ON quarantine (dataset, partition);

CREATE TABLE alerts (
    id BIGSERIAL NOT NULL,
    kind VARCHAR(64) NOT NULL,
    severity VARCHAR(16) NOT NULL,
    message TEXT NOT NULL,
    details JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    delivered BOOLEAN DEFAULT false NOT NULL,
    attempts INTEGER DEFAULT '0' NOT NULL,
    last_error TEXT,
    CONSTRAINT pk_alerts PRIMARY KEY (id)
);

CREATE INDEX ix_alerts_delivered ON alerts (delivered);

INSERT INTO usdcop_alembic_version (version_num) VALUES ('0001_initial') RETURNING usdcop_alembic_version.version_num;

-- Running upgrade 0001_initial -> 0002_additional_backtests

ALTER TABLE promotion_proposals ADD COLUMN additional_backtests JSONB DEFAULT '[]' NOT NULL;

UPDATE usdcop_alembic_version SET version_num='0002_additional_backtests' WHERE usdcop_alembic_version.version_num = '0001_initial';

-- Running upgrade 0002_additional_backtests -> 0003_drop_sql_quarantine

DROP INDEX ix_quarantine_dataset_partition;

DROP TABLE quarantine;

UPDATE usdcop_alembic_version SET version_num='0003_drop_sql_quarantine' WHERE usdcop_alembic_version.version_num = '0002_additional_backtests';

-- Running upgrade 0003_drop_sql_quarantine -> 0004_trial_ledger

CREATE TABLE trial_ledger (
    id BIGSERIAL NOT NULL,
    trial_id VARCHAR(64) NOT NULL,
    family VARCHAR(128) NOT NULL,
    experiment_version VARCHAR(64) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    seed INTEGER,
    selected BOOLEAN DEFAULT false NOT NULL,
    model_id VARCHAR(128),
    params_hash VARCHAR(64),
    config_hash VARCHAR(64) NOT NULL,
    data_hash VARCHAR(64) NOT NULL,
    val_sharpe FLOAT,
    test_sharpe FLOAT,
    test_bars INTEGER,
    returns_partition VARCHAR(128),
    run_id VARCHAR(64),
    mlflow_run_id VARCHAR(64),
    details JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_trial_ledger PRIMARY KEY (id),
    CONSTRAINT ck_trial_ledger_kind CHECK (kind IN ('training_seed', 'search_trial')),
    CONSTRAINT uq_trial_ledger_trial_id UNIQUE (trial_id)
);

CREATE INDEX ix_trial_ledger_family ON trial_ledger (family);

CREATE FUNCTION trial_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trial_ledger is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER trg_trial_ledger_no_update_delete BEFORE UPDATE OR DELETE ON trial_ledger FOR EACH ROW EXECUTE FUNCTION trial_ledger_append_only();

CREATE TRIGGER trg_trial_ledger_no_truncate BEFORE TRUNCATE ON trial_ledger FOR EACH STATEMENT EXECUTE FUNCTION trial_ledger_append_only();

UPDATE usdcop_alembic_version SET version_num='0004_trial_ledger' WHERE usdcop_alembic_version.version_num = '0003_drop_sql_quarantine';

-- Running upgrade 0004_trial_ledger -> 0005_live_journal

CREATE TABLE live_journal (
    id BIGSERIAL NOT NULL,
    risk_key VARCHAR(64) NOT NULL,
    bar_time TIMESTAMP WITH TIME ZONE NOT NULL,
    journal JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_live_journal PRIMARY KEY (id),
    CONSTRAINT uq_live_journal_risk_key_bar_time UNIQUE (risk_key, bar_time)
);

INSERT INTO live_journal (risk_key, bar_time, journal, created_at)
SELECT split_part(key, '@', 1), CAST(substr(key, strpos(key, '@') + 1) AS TIMESTAMP WITH TIME ZONE),
       coalesce(extra, '{}'::jsonb) || jsonb_build_object('trading_date', to_char(trading_date, 'YYYY-MM-DD'), 'equity', equity, 'peak_equity', peak_equity, 'daily_pnl_pct', daily_pnl_pct, 'drawdown_pct', drawdown_pct, 'trades_today', trades_today, 'consecutive_losses', consecutive_losses, 'breaker_active', breaker_active, 'breaker_reason', breaker_reason, 'cooldown_until', CASE WHEN cooldown_until IS NULL THEN NULL ELSE to_char((cooldown_until AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN date_part('microseconds', cooldown_until)::int % 1000000 = 0 THEN '' ELSE to_char((cooldown_until AT TIME ZONE 'UTC'), '.US') END || '+00:00' END), updated_at
FROM risk_state WHERE key ~ '^[^@]+@[0-9]{4}-[0-9]{2}-[0-9]{2}T'
ORDER BY substr(key, strpos(key, '@') + 1);

DELETE FROM risk_state WHERE key ~ '^[^@]+@[0-9]{4}-[0-9]{2}-[0-9]{2}T';

CREATE FUNCTION live_journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'live_journal is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER trg_live_journal_no_update_delete BEFORE UPDATE OR DELETE ON live_journal FOR EACH ROW EXECUTE FUNCTION live_journal_append_only();

CREATE TRIGGER trg_live_journal_no_truncate BEFORE TRUNCATE ON live_journal FOR EACH STATEMENT EXECUTE FUNCTION live_journal_append_only();

UPDATE usdcop_alembic_version SET version_num='0005_live_journal' WHERE usdcop_alembic_version.version_num = '0004_trial_ledger';

COMMIT;
