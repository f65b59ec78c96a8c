"""The optional `search` section of an experiment YAML: the hyperparameter search space.

    search:
      timesteps: 4096            # budget of one trial (default: algorithm.total_timesteps)
      sampler_seed: 0            # TPE's seed: the same study asks the same first configurations
      startup_trials: 4          # TPE samples at random until this many trials have finished
      pruner: {startup_trials: 2, warmup_evaluations: 0}   # MedianPruner on the validation scores
      params:                    # dotted paths into the experiment, one distribution each
        algorithm.hyperparameters.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
        algorithm.hyperparameters.n_epochs: {low: 1, high: 4, type: int}
        reward.drawdown_penalty: {low: 0.0, high: 0.5}
        algorithm.net_arch: {choices: [[32, 32], [64, 64]]}

Only PPO hyperparameters, the reward weights and the network (`algorithm.*`, `reward.*`) are
searchable: the data, the costs of the environment and the success criteria are not
hyperparameters. The ExperimentConfig validator applies each bound (and each choice) to the
experiment and refuses the file naming the key when one would give an invalid experiment.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from usdcop_platform.contracts.base import StrictModel

SEARCHABLE_PREFIXES = ("algorithm.", "reward.")
NOT_SEARCHABLE = ("algorithm.name", "algorithm.total_timesteps", "algorithm.early_stopping")


class SearchParam(StrictModel):
    """A range (low, high; optionally log-uniform and/or stepped, float or int) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    type: Literal["float", "int"] = "float"
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _shape(self) -> "SearchParam":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0 (got {self.step})")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"an int range needs integer bounds (got {self.low}, {self.high})")
        return self

    def extremes(self) -> tuple[Any, ...]:
        """The values the validator tries: both bounds, or every choice."""
        if self.choices is not None:
            return self.choices
        cast = int if self.type == "int" else float
        return cast(self.low), cast(self.high)  # type: ignore[arg-type]


class PrunerConfig(StrictModel):
    """Optuna's MedianPruner: a trial stops when its validation score at an evaluation is below the
    median of earlier trials at the same step, once `startup_trials` trials have finished and after
    its own first `warmup_evaluations` evaluations."""

    startup_trials: int = Field(default=2, ge=0)
    warmup_evaluations: int = Field(default=0, ge=0)


class SearchConfig(StrictModel):
    timesteps: int | None = Field(default=None, ge=1)
    sampler_seed: int = 0
    startup_trials: int = Field(default=4, ge=0)
    pruner: PrunerConfig = PrunerConfig()
    params: dict[str, SearchParam] = Field(min_length=1)

    @model_validator(mode="after")
    def _paths(self) -> "SearchConfig":
        for key in self.params:
            if not key.startswith(SEARCHABLE_PREFIXES) or key.startswith(NOT_SEARCHABLE):
                raise ValueError(
                    f"search.params[{key!r}]: only algorithm.* (except name, total_timesteps, early_stopping) "
                    "and reward.* are searchable"
                )
        return self


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict (the canonical experiment); a missing step is a KeyError naming it."""
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise KeyError(f"{'.'.join(parents[: i + 1])} is not a section of the experiment")
        node = node[part]
    if leaf not in node:
        raise KeyError(f"{key} is not a field of the experiment")
    node[leaf] = list(value) if isinstance(value, tuple) else value
