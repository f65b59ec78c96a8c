"""Experiment contract (config/experiments/*.yaml) with its content hashes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from usdcop_platform.contracts.base import StrictModel, content_hash
from usdcop_platform.contracts.date_ranges import DateRanges
from usdcop_platform.contracts.search import SearchConfig, set_path


class EnvironmentConfig(StrictModel):
    episode_sessions: int = Field(ge=1)
    flat_at_session_end: bool = True
    cost_bps: float = Field(ge=0)


CostCharging = Literal["per_change", "round_trip_at_entry"]


class RewardConfig(StrictModel):
    """Reward weights (core.env). `cost_charging` decides when the reward sees costs, never how
    much: per_change charges cost x |dp| at each change; round_trip_at_entry charges the whole
    round trip (2 x cost) when a position is opened and nothing when it is closed (episodes end flat,
    so both sum to the same total)."""

    cost_charging: CostCharging = "per_change"
    pnl_weight: float = 1.0
    drawdown_penalty: float = Field(default=0.0, ge=0)
    turnover_penalty: float = Field(default=0.0, ge=0)
    inactivity_penalty: float = Field(default=0.0, ge=0)
    scale: float = Field(default=1.0, gt=0)


class CurriculumPhase(StrictModel):
    until_fraction: float = Field(gt=0, le=1)
    cost_multiplier: float = Field(ge=0)


class PPOHyperparameters(StrictModel):
    """Only PPO keys stable-baselines3 accepts; an unknown one is an error."""

    learning_rate: float = Field(default=3e-4, gt=0)
    n_steps: int = Field(default=2048, ge=8)
    batch_size: int = Field(default=64, ge=8)
    n_epochs: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    gae_lambda: float = Field(default=0.95, gt=0, le=1)
    clip_range: float = Field(default=0.2, gt=0)
    ent_coef: float = Field(default=0.0, ge=0)
    vf_coef: float = Field(default=0.5, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)


class EarlyStopping(StrictModel):
    eval_every_timesteps: int = Field(ge=1)
    patience: int = Field(ge=1)
    # Validation scores (and so the checkpoints that can be restored) start once this fraction of
    # the budget is trained: parameters trained under discounted curriculum costs are no candidates,
    # and a short validation split scored early picks lucky, still-trading policies.
    start_fraction: float = Field(default=0.0, ge=0, lt=1)


class AlgorithmConfig(StrictModel):
    name: Literal["PPO"]
    total_timesteps: int = Field(ge=1)
    n_envs: int = Field(default=16, ge=1)
    hyperparameters: PPOHyperparameters = PPOHyperparameters()
    net_arch: tuple[int, ...] = (64, 64)
    # Added to the HOLD logit of the freshly initialised policy: the untrained policy stays flat
    # most of the time, so whole sessions without a trade are sampled from the first rollout.
    initial_hold_bias: float = Field(default=0.0, ge=0, le=10)
    early_stopping: EarlyStopping | None = None


class WalkForwardConfig(StrictModel):
    """Expanding-window walk-forward: fold k trains on every session from the train start up to its
    own cut (normalization fitted on that window only) and is scored on the next `test_sessions`
    sessions, which no earlier fold trained on. 0 folds = off."""

    folds: int = Field(default=0, ge=0)
    test_sessions: int = Field(default=20, ge=1)
    min_train_sessions: int = Field(default=60, ge=1)


class BacktestConfig(StrictModel):
    initial_capital: float = Field(default=100_000.0, gt=0)
    cost_bps: float = Field(default=75.0, ge=0)
    cost_sweep_bps: tuple[float, ...] = (2, 5, 10, 25, 50, 75)
    min_test_bars: int = Field(default=3000, ge=1)
    walk_forward_folds: int = Field(default=0, ge=0)
    walk_forward: WalkForwardConfig = WalkForwardConfig()


class SuccessCriteria(StrictModel):
    min_sharpe: float = 0.5
    max_drawdown: float = Field(default=0.15, gt=0, le=1)
    min_win_rate: float = Field(default=0.45, ge=0, le=1)
    min_trades: int = Field(default=50, ge=0)
    improvement_threshold: float = Field(default=0.05, ge=0)
    # Significance: PSR(0) and DSR must reach p_min and the test must be at least MinTRL(p_min) long.
    p_min: float = Field(default=0.95, gt=0.5, lt=1)
    # Stability: share of walk-forward folds with a positive Sharpe (used when folds exist).
    min_positive_fold_share: float = Field(default=0.5, ge=0, le=1)


class ExperimentConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: str
    description: str = ""
    feature_contract_version: str
    date_ranges: DateRanges
    embargo_bars: int = Field(ge=0)
    environment: EnvironmentConfig
    reward: RewardConfig
    curriculum: tuple[CurriculumPhase, ...] = ()
    algorithm: AlgorithmConfig
    seeds: tuple[int, ...] = Field(min_length=1)
    backtest: BacktestConfig = BacktestConfig()
    success_criteria: SuccessCriteria = SuccessCriteria()
    # Hyperparameter search space (contracts.search); not part of config_hash: a trained model's
    # config is the sampled one, and a study is named after the space's own hash.
    search: SearchConfig | None = None

    @field_validator("curriculum")
    @classmethod
    def _curriculum(cls, v: tuple[CurriculumPhase, ...]) -> tuple[CurriculumPhase, ...]:
        fractions = [p.until_fraction for p in v]
        if fractions and (fractions != sorted(fractions) or fractions[-1] != 1.0):
            raise ValueError("phases must have increasing until_fraction ending at 1.0")
        return v

    @model_validator(mode="after")
    def _batch(self) -> "ExperimentConfig":
        hp = self.algorithm.hyperparameters
        rollout = hp.n_steps * self.algorithm.n_envs
        if hp.batch_size > rollout:
            raise ValueError(f"batch_size {hp.batch_size} exceeds n_steps*n_envs = {rollout}")
        return self

    @model_validator(mode="after")
    def _search(self) -> "ExperimentConfig":
        if self.search is None:
            return self
        for key, param in self.search.params.items():
            for value in param.extremes():
                try:
                    self.with_params({key: value})
                except (KeyError, ValueError) as exc:
                    raise ValueError(f"search.params[{key!r}]: value {value!r} gives an invalid experiment: {exc}") from None
        return self

    def with_params(self, params: dict[str, Any]) -> "ExperimentConfig":
        """This experiment with dotted-path values set (a search trial's config), without `search`."""
        raw = self.canonical()
        for key, value in params.items():
            set_path(raw, key, value)
        return ExperimentConfig.model_validate(raw)

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"search"})

    @property
    def config_hash(self) -> str:
        """sha256 of the canonical content: the experiment's identity for immutability checks."""
        return content_hash(self.canonical())

    @property
    def reward_config_hash(self) -> str:
        return content_hash(
            {
                "reward": self.reward.model_dump(mode="json"),
                "curriculum": [p.model_dump(mode="json") for p in self.curriculum],
                "environment": self.environment.model_dump(mode="json"),
            }
        )

    @property
    def key(self) -> str:
        """The dynamic-partition key of this experiment."""
        return self.name
