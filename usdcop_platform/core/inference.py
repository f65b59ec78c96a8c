"""ONNX inference engine: verified models from the registry, an ensemble, hot reload by atomic swap.

Serving imports numpy and onnxruntime only (never torch). For a raw observation x (the 15
contract values, un-normalized) each member i normalizes with its own train-split stats and runs
its ONNX policy, giving probabilities p_i over (SELL, HOLD, BUY). With weights w_i (mlops.yaml):

    weighted_average:  p = Σ w_i p_i / Σ w_i,      action = argmax p
    majority_vote:     v_a = Σ_{i: argmax p_i = a} w_i,  action = argmax v (a tie -> HOLD),
                       p as above (reported)
    confidence = p[action]

Loading a member verifies, and refuses on any mismatch:
  - the ONNX file's sha256 equals the registry's `onnx_hash` (a corrupted or swapped file);
  - the model's `feature_order_hash` (registry row and ONNX metadata) equals the contract's;
  - the ONNX metadata's model_id and model_hash equal the registry row's;
  - the norm stats file's content hash equals the registry's (and the ONNX metadata's)
    norm_stats_hash, and the stats were fitted for the contract's feature order;
  - the model is servable (it passed ONNX parity) and warms up to finite probabilities.

The live path decides through `step()`: each member's observation is core.policy_runner's
(`observation`, the per-bar input the backtest's policy_step builds) and its probabilities are
its graph's; a one-member ensemble runs policy_step itself. Several members run as one fused
onnxruntime session (core.onnx_ensemble: their graphs side by side, verified at load to give each
member's own outputs bit for bit, else they run one by one), so a bar pays one session run.

The served ensemble is one immutable snapshot. `maybe_reload()` polls the registry version
and, when it moved, builds a new snapshot beside the old one and swaps the reference in one
assignment; any failure keeps the old snapshot serving and is reported in `status()`.
`predict` reads the reference once, so a request never sees half of a swap. onnxruntime's
`InferenceSession.run` is thread-safe and `predict_proba` allocates its own input, so many
threads may predict at once.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from usdcop_platform.contracts.base import content_hash, file_hash
from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
from usdcop_platform.core.actions import HOLD, N_ACTIONS
from usdcop_platform.core.onnx_policy import OnnxPolicy, OnnxPolicyError
from usdcop_platform.core.onnx_ensemble import FusedPolicies, fuse
from usdcop_platform.core.policy_runner import PolicyRunError, observation, policy_step

WARMUP_RUNS: Final = 3  # first runs pay onnxruntime's lazy allocations; do them before serving
PROB_SUM_TOLERANCE: Final = 1e-4  # softmax outputs of a healthy graph sum to 1 within float32 error


class InferenceError(RuntimeError):
    """Base class of the engine's errors; messages are complete on their own."""


class NoProductionModel(InferenceError):
    """The registry has no production model to serve."""


class ModelVerificationError(InferenceError):
    """A model was refused: missing/corrupted file, hash mismatch, wrong feature contract."""


class InvalidObservation(ValueError):
    """An observation that must not reach a model (wrong length, NaN, inf)."""


class Normalizer(Protocol):
    def apply(self, matrix: np.ndarray) -> np.ndarray: ...


class ModelRegistrySource(Protocol):
    """What the engine needs from the SQL store (`store.models` + `store.registry_version()`)."""

    def registry_version(self) -> int: ...

    @property
    def models(self) -> Any: ...


def validate_observations(obs: Any, n_features: int) -> np.ndarray:
    """(n_features,) or (n, n_features) finite numbers -> float64 (n, n_features); else InvalidObservation."""
    try:
        x = np.asarray(obs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidObservation(f"observation must be numbers: {exc}") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != n_features:
        raise InvalidObservation(
            f"observation must have exactly {n_features} values, got shape {tuple(np.shape(obs))}")
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise InvalidObservation(
            f"observation {r} value {c} is {x[r, c]!r}: NaN and ±inf never reach a model")
    return x


def _default_norm_loader(path: Path) -> Normalizer:
    from usdcop_platform.core.normalization import NormStats

    return NormStats.from_json(path)


@dataclass(frozen=True)
class ServingModel:
    """One verified, warmed-up ensemble member."""

    model_id: str
    model_hash: str
    onnx_hash: str
    feature_order_hash: str
    norm_stats_hash: str | None
    stage: str
    weight: float
    policy: OnnxPolicy = field(repr=False, compare=False)
    normalizer: Normalizer | None = field(repr=False, compare=False)
    experiment_name: str | None = None  # the registry row's (its experiment's rules, e.g. flat at session end)

    def identity(self) -> tuple[str, str, float]:
        return self.model_id, self.onnx_hash, self.weight

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Raw (n, d) float64 -> the float32 observation this model was trained on (the same
        transformation as core.policy_runner.observation, positions already in place)."""
        z = self.normalizer.apply(raw) if self.normalizer is not None else raw
        return np.ascontiguousarray(z, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "model_hash": self.model_hash, "onnx_hash": self.onnx_hash,
                "feature_order_hash": self.feature_order_hash, "norm_stats_hash": self.norm_stats_hash,
                "stage": self.stage, "weight": self.weight}


@dataclass(frozen=True)
class EnsembleSnapshot:
    members: tuple[ServingModel, ...]
    method: str
    registry_version: int | None
    loaded_at: datetime
    fused: FusedPolicies | None = field(default=None, repr=False, compare=False)  # the members' graphs as one session

    @functools.cached_property
    def ensemble_hash(self) -> str:
        """Content hash of what is served (ids, ONNX hashes, weights, method)."""
        return content_hash({"method": self.method, "members": [m.identity() for m in self.members]})

    @property
    def primary(self) -> ServingModel:
        return self.members[0]


@dataclass(frozen=True)
class MemberPrediction:
    model_id: str
    model_hash: str
    probabilities: np.ndarray  # (3,) float64
    action: int
    value: float
    weight: float


@dataclass(frozen=True)
class Prediction:
    action: int
    probabilities: np.ndarray  # (3,) float64, ensemble
    confidence: float
    members: tuple[MemberPrediction, ...]
    method: str
    ensemble_hash: str
    registry_version: int | None
    forced_flat: bool = False  # the bar was forced flat (session end): act HOLD whatever `action` says

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "forced_flat": self.forced_flat,
            "probabilities": [float(p) for p in self.probabilities],
            "confidence": self.confidence,
            "method": self.method,
            "ensemble_hash": self.ensemble_hash,
            "registry_version": self.registry_version,
            "members": [{"model_id": m.model_id, "model_hash": m.model_hash, "action": m.action,
                         "probabilities": [float(p) for p in m.probabilities], "value": m.value,
                         "weight": m.weight} for m in self.members],
        }


def combine(method: str, weights: np.ndarray, member_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ensemble of member probabilities (k, n, 3) with weights (k,) -> (probs (n,3), action (n,), conf (n,))."""
    w = weights / weights.sum()
    probs = member_probs[0] * w[0]  # (n, 3); a loop over the few members beats tensordot's overhead
    for i in range(1, w.size):
        probs = probs + member_probs[i] * w[i]
    if method == "weighted_average":
        action = probs.argmax(axis=1)
    elif method == "majority_vote":
        votes = np.zeros_like(probs)
        member_actions = member_probs.argmax(axis=2)  # (k, n)
        for i, wi in enumerate(w):
            votes[np.arange(votes.shape[0]), member_actions[i]] += wi
        top = votes.max(axis=1, keepdims=True)
        tied = (np.isclose(votes, top)).sum(axis=1) > 1
        action = np.where(tied, HOLD, votes.argmax(axis=1))
    else:
        raise ValueError(f"unknown ensemble method {method!r}")
    conf = probs[np.arange(probs.shape[0]), action]
    return probs, action.astype(np.int64), conf


class InferenceEngine:
    """Serves the ensemble of mlops.yaml from the model registry (see module docstring)."""

    def __init__(
        self,
        registry: ModelRegistrySource,
        contract: FeatureContract,
        ensemble: EnsembleConfig,
        *,
        models_root: Path | str | None = None,
        poll_interval_s: float = 0.0,
        norm_loader: Callable[[Path], Normalizer] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry, self.contract, self.ensemble = registry, contract, ensemble
        self.models_root = Path(models_root) if models_root else None
        self.poll_interval_s = poll_interval_s
        self._norm_loader = norm_loader or _default_norm_loader
        self._clock = clock
        self._snapshot: EnsembleSnapshot | None = None
        self._reload_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._last_poll = float("-inf")
        self.last_error: str | None = None
        self.stats = {"loads": 0, "reloads": 0, "failed_loads": 0, "predictions": 0}

    # ---- loading ---------------------------------------------------------------------------
    def _path(self, value: str | None, what: str, model_id: str) -> Path:
        if not value:
            raise ModelVerificationError(f"model {model_id!r}: the registry has no {what}")
        p = Path(value)
        if not p.is_absolute() and self.models_root is not None:
            p = self.models_root / p
        if not p.is_file():
            raise ModelVerificationError(f"model {model_id!r}: {what} {p} does not exist")
        return p

    def _resolve(self, member: EnsembleMember) -> Any | None:
        models = self.registry.models
        if member.model_id is not None:
            rec = models.get(member.model_id)
            if rec is None:
                raise ModelVerificationError(f"ensemble member {member.model_id!r} is not in the registry")
            return rec
        if member.stage == "production":
            rec = models.production()
            if rec is None:
                raise NoProductionModel("no production model in the registry: approve a promotion proposal first")
            return rec
        staged = [r for r in models.list(stage=member.stage) if r.get("servable", True)]
        return staged[0] if staged else None  # an empty staging slot is not an error

    def load_member(self, rec: Any, weight: float) -> ServingModel:
        """Verify and warm up one registry row; raises ModelVerificationError on any mismatch."""
        mid = rec["model_id"]
        if not rec.get("servable", True):
            raise ModelVerificationError(f"model {mid!r} is not servable (it failed ONNX parity)")
        expected_foh = self.contract.feature_order_hash
        if rec.get("feature_order_hash") != expected_foh:
            raise ModelVerificationError(
                f"model {mid!r}: registry feature_order_hash {rec.get('feature_order_hash')} != contract "
                f"{expected_foh} (a model for another feature layout)")
        onnx_path = self._path(rec.get("onnx_path"), "ONNX file", mid)
        actual = file_hash(onnx_path)
        expected = rec.get("onnx_hash")
        if not expected:
            raise ModelVerificationError(f"model {mid!r}: the registry records no onnx_hash to verify against")
        if actual != expected:
            raise ModelVerificationError(
                f"model {mid!r}: ONNX file {onnx_path} has sha256 {actual[:16]}…, the registry says "
                f"{expected[:16]}… (corrupted or replaced file)")
        try:
            policy = OnnxPolicy(onnx_path)
        except OnnxPolicyError as exc:
            raise ModelVerificationError(f"model {mid!r}: {exc}") from exc
        if policy.feature_order_hash != expected_foh:
            raise ModelVerificationError(
                f"model {mid!r}: ONNX metadata feature_order_hash {policy.feature_order_hash} != contract {expected_foh}")
        if policy.model_id is not None and policy.model_id != mid:
            raise ModelVerificationError(f"model {mid!r}: ONNX metadata names model {policy.model_id!r}")
        if policy.n_features not in (-1, self.contract.n_features):
            raise ModelVerificationError(f"model {mid!r}: takes {policy.n_features} inputs, the contract has "
                                         f"{self.contract.n_features}")
        meta_hash = policy.metadata.get("model_hash")
        if meta_hash is not None and meta_hash != rec["model_hash"]:
            raise ModelVerificationError(
                f"model {mid!r}: ONNX metadata model_hash {meta_hash[:16]}… != registry {rec['model_hash'][:16]}…")
        normalizer: Normalizer | None = None
        want = rec.get("norm_stats_hash")
        if rec.get("norm_stats_path"):
            ns_path = self._path(rec.get("norm_stats_path"), "norm stats file", mid)
            try:
                normalizer = self._norm_loader(ns_path)
            except Exception as exc:  # a bad stats file is a refused model, whatever the parser raises
                raise ModelVerificationError(f"model {mid!r}: norm stats {ns_path} unreadable: {exc}") from exc
            got = getattr(normalizer, "stats_hash", None)
            if want and got is not None and got != want:
                raise ModelVerificationError(
                    f"model {mid!r}: norm stats hash {got[:16]}… != registry {want[:16]}…")
            if getattr(normalizer, "feature_order_hash", expected_foh) != expected_foh:
                raise ModelVerificationError(f"model {mid!r}: norm stats were fitted for another feature order")
        elif want:
            raise ModelVerificationError(f"model {mid!r}: the registry records norm stats but no norm_stats_path")
        meta_ns = policy.metadata.get("norm_stats_hash")
        if want and meta_ns is not None and meta_ns != want:
            raise ModelVerificationError(f"model {mid!r}: ONNX metadata norm_stats_hash differs from the registry's")
        model = ServingModel(mid, rec["model_hash"], actual, expected_foh, rec.get("norm_stats_hash"),
                             rec.get("stage", "?"), float(weight), policy, normalizer, rec.get("experiment_name"))
        self._warm_up(model)
        return model

    def _warm_up(self, model: ServingModel) -> None:
        zeros = np.zeros((1, self.contract.n_features), dtype=np.float64)
        for _ in range(WARMUP_RUNS):
            probs, _value = model.policy.predict_proba(model.normalize(zeros))
        if probs.shape != (1, N_ACTIONS) or not np.isfinite(probs).all() or abs(float(probs.sum()) - 1) > PROB_SUM_TOLERANCE:
            raise ModelVerificationError(f"model {model.model_id!r}: warm-up output {probs!r} is not a probability vector")

    def build_snapshot(self) -> EnsembleSnapshot:
        """Resolve and load every configured member (raises if the ensemble cannot be served)."""
        version = int(self.registry.registry_version())
        members: list[ServingModel] = []
        seen: set[str] = set()
        for m in self.ensemble.members:
            rec = self._resolve(m)
            if rec is None or rec["model_id"] in seen:
                continue
            seen.add(rec["model_id"])
            members.append(self.load_member(rec, m.weight))
        if not members:
            raise NoProductionModel("no ensemble member resolves to a servable model")
        fused = fuse([m.policy for m in members], self.contract.n_features)
        return EnsembleSnapshot(tuple(members), self.ensemble.method, version, datetime.now(timezone.utc), fused)

    def load(self) -> EnsembleSnapshot:
        """(Re)load now. On failure the previous snapshot keeps serving and the error is raised."""
        with self._reload_lock:
            self._last_poll = self._clock()
            try:
                snap = self.build_snapshot()
            except Exception as exc:
                self.stats["failed_loads"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            old = self._snapshot
            self._snapshot = snap  # the atomic swap: one reference assignment
            self.last_error = None
            self.stats["loads"] += 1
            if old is not None:
                self.stats["reloads"] += 1
            return snap

    def maybe_reload(self, force: bool = False, version: int | None = None) -> bool:
        """Reload when the registry version moved (polled at most every poll_interval_s; a caller
        that already read the version in its own transaction passes it as `version`).

        Returns True when a new snapshot was swapped in. Never raises while a snapshot is served:
        a failed reload leaves the old models serving and sets `last_error`.
        """
        if (version is None and not force and self._snapshot is not None
                and self._clock() - self._last_poll < self.poll_interval_s):
            return False
        current = self._snapshot
        if current is not None:
            try:
                if version is None:
                    version = int(self.registry.registry_version())
            except Exception as exc:  # the DB is down: keep serving what we have
                self.last_error = f"registry unreachable: {exc}"
                self._last_poll = self._clock()
                return False
            if version == current.registry_version:
                self._last_poll = self._clock()
                return False
        try:
            self.load()
        except Exception:
            if current is None:
                raise
            return False
        return True

    # ---- serving ---------------------------------------------------------------------------
    @property
    def snapshot(self) -> EnsembleSnapshot:
        snap = self._snapshot
        if snap is None:
            self.maybe_reload(force=True)
            snap = self._snapshot
        assert snap is not None
        return snap

    @property
    def position_index(self) -> int:
        return self.contract.names.index("position")

    def _assemble(self, snap: EnsembleSnapshot, member_probs: np.ndarray, values: np.ndarray,
                  forced_flat: bool = False) -> list[Prediction]:
        weights = np.array([m.weight for m in snap.members], dtype=np.float64)
        probs, actions, conf = combine(snap.method, weights, member_probs)
        with self._stats_lock:
            self.stats["predictions"] += member_probs.shape[1]
        ens_hash = snap.ensemble_hash
        out = []
        for r in range(member_probs.shape[1]):
            members = tuple(
                MemberPrediction(m.model_id, m.model_hash, member_probs[i, r].copy(),
                                 int(member_probs[i, r].argmax()), float(values[i, r]), m.weight)
                for i, m in enumerate(snap.members))
            out.append(Prediction(int(actions[r]), probs[r].copy(), float(conf[r]), members, snap.method,
                                  ens_hash, snap.registry_version, forced_flat))
        return out

    def step(self, raw_row: Any, position: int, *, force_flat: bool = False) -> Prediction:
        """The live decision for one bar: raw features of the bar and the position held coming
        into it, through core.policy_runner.policy_step for every member, then the ensemble."""
        snap = self.snapshot
        x = validate_observations(raw_row, self.contract.n_features)[0]
        k = len(snap.members)
        member_probs = np.empty((k, 1, N_ACTIONS), dtype=np.float64)
        values = np.zeros((k, 1), dtype=np.float64)
        if snap.fused is not None:  # policy_step's input per member, every graph in one session run
            try:
                obs = [observation(m.normalizer, x, int(position), self.position_index)[None, :] for m in snap.members]
            except PolicyRunError as exc:
                raise InvalidObservation(str(exc)) from None
            for i, probs in enumerate(snap.fused.probabilities(obs)):
                member_probs[i, 0] = probs[0]
            return self._assemble(snap, member_probs, values, force_flat)[0]
        for i, m in enumerate(snap.members):
            try:
                d = policy_step(m.policy, m.normalizer, x, int(position), position_index=self.position_index,
                                force_flat=force_flat)
            except PolicyRunError as exc:
                raise InvalidObservation(str(exc)) from None
            member_probs[i, 0] = d.probabilities
        return self._assemble(snap, member_probs, values, force_flat)[0]

    def predict_batch(self, observations: Any) -> list[Prediction]:
        """Raw observations (n, 15), position included (-1, 0 or +1) -> one Prediction per row."""
        snap = self.snapshot  # read once: the whole batch is served by one snapshot
        x = validate_observations(observations, self.contract.n_features)
        pos = x[:, self.position_index]
        bad = (pos != -1.0) & (pos != 0.0) & (pos != 1.0)
        if bad.any():
            r = int(np.argmax(bad))
            raise InvalidObservation(f"observation {r}: position (value {self.position_index}) must be -1, 0 or "
                                     f"+1, got {pos[r]!r}")
        k = len(snap.members)
        member_probs = np.empty((k, x.shape[0], N_ACTIONS), dtype=np.float64)
        values = np.empty((k, x.shape[0]), dtype=np.float64)
        for i, m in enumerate(snap.members):
            p, v = m.policy.predict_proba(m.normalize(x))
            member_probs[i], values[i] = p, v
        return self._assemble(snap, member_probs, values)

    def predict(self, observation: Any) -> Prediction:
        if np.ndim(observation) == 2 and np.shape(observation)[0] != 1:
            raise InvalidObservation(f"predict takes one observation, got {np.shape(observation)[0]}; use predict_batch")
        return self.predict_batch(observation)[0]

    def status(self) -> dict[str, Any]:
        snap = self._snapshot
        return {
            "loaded": snap is not None,
            "method": snap.method if snap else self.ensemble.method,
            "registry_version": snap.registry_version if snap else None,
            "ensemble_hash": snap.ensemble_hash if snap else None,
            "loaded_at": snap.loaded_at.isoformat() if snap else None,
            "members": [m.describe() for m in snap.members] if snap else [],
            "last_error": self.last_error,
            **self.stats,
        }
