"""Hyperparameter search, the pure part: sampling a configuration, naming a study, ranking trials.

A study is identified by the experiment (name, version, config_hash: data ranges, costs, ...) and
by its search space: `study_name` hashes both, so re-running `usdcop tune` with the same YAML
resumes the same study, and a changed space starts a new one instead of mixing two searches.

`suggest` works with any object that has Optuna's `suggest_float/int/categorical` methods (an
`optuna.Trial`), so this module imports no framework. Choices that are not scalars (network sizes
such as [64, 64]) are offered to the sampler as their JSON text and decoded back.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from usdcop_platform.contracts.base import content_hash
from usdcop_platform.contracts.experiment import ExperimentConfig
from usdcop_platform.contracts.search import SearchConfig, SearchParam

OBJECTIVE = "val_reward"  # maximized; the same score early stopping and seed selection use


class Suggester(Protocol):
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class SearchSpaceError(ValueError):
    """An experiment without a usable `search` section."""


def space_of(exp: ExperimentConfig) -> SearchConfig:
    if exp.search is None:
        raise SearchSpaceError(
            f"experiment {exp.name!r} has no `search` section: add search.params to config/experiments/{exp.name}.yaml"
        )
    return exp.search


def _encode(choice: Any) -> Any:
    return choice if isinstance(choice, (str, int, float, bool)) or choice is None else json.dumps(choice)


def _decode(value: Any, choices: tuple[Any, ...]) -> Any:
    for c in choices:
        if _encode(c) == value:
            return c
    raise ValueError(f"{value!r} is not one of {choices}")


def suggest_one(trial: Suggester, key: str, p: SearchParam) -> Any:
    if p.choices is not None:
        return _decode(trial.suggest_categorical(key, [_encode(c) for c in p.choices]), p.choices)
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)  # type: ignore[arg-type]
    return trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)  # type: ignore[arg-type]


def suggest(trial: Suggester, space: SearchConfig) -> dict[str, Any]:
    """One configuration: {dotted path: value}, in the YAML's key order."""
    return {key: suggest_one(trial, key, p) for key, p in space.params.items()}


def decode_params(space: SearchConfig, stored: dict[str, Any]) -> dict[str, Any]:
    """Parameters as a study stores them (choices as JSON text) -> experiment values."""
    out = {}
    for key, value in stored.items():
        p = space.params.get(key)
        out[key] = _decode(value, p.choices) if p is not None and p.choices is not None else value
    return out


def space_hash(exp: ExperimentConfig) -> str:
    return content_hash({"config_hash": exp.config_hash, "search": space_of(exp).model_dump(mode="json")})


def study_name(exp: ExperimentConfig) -> str:
    """<experiment>-<version>-<hash of config and space>: same YAML, same study (resumable)."""
    return f"{exp.name}-{exp.version}-{space_hash(exp)[:10]}"


def trial_budget(exp: ExperimentConfig) -> int:
    return int(space_of(exp).timesteps or exp.algorithm.total_timesteps)
