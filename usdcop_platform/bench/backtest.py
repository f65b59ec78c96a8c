"""`usdcop bench backtest`: backtest + all metrics vs vectorbt 0.28 on the same positions and costs.

For 90k and 1M synthetic 5-minute bars (a geometric random walk, positions in {-1, 0, +1} that
change on ~0.5 % of bars, 75 bps), times

    ours      core.backtest.backtest: equity, drawdown, bar/session returns, trades, Sharpe,
              Sortino, drawdown, returns, turnover, exposure, win rate, profit factor, PSR, DSR,
              MinTRL, certifiable Sharpe
    vectorbt  Portfolio.from_signals(size=inf, fees) + .stats()   (numba warmed up first)

best of several runs each, and checks both agree on the final equity (relative difference).
Also reported, without a peer: the full evaluation (benchmarks, 6-level cost sweep, two
2,000-sample block bootstraps) and the sequential ONNX policy replay of a one-year test split
through core.policy_runner (a 15-64-64-3 MLP, one onnxruntime call per bar).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from usdcop_platform.bench.harness import BenchResult, best_of, time_once
from usdcop_platform.core.backtest import backtest, evaluate
from usdcop_platform.core.metrics import Annualization

COST_BPS = 75.0
CAPITAL = 100_000.0
CONFIDENCE = 0.95
SIZES_FULL = (90_000, 1_000_000)
SIZES_QUICK = (90_000,)
TARGET_MS_90K = 10.0
TARGET_SPEEDUP = 3.0
AGREEMENT_TOLERANCE = 1e-9
CHANGE_PROBABILITY = 0.005
EDGE_PER_BAR = 5e-5
SWEEP_BPS = (2, 5, 10, 25, 50, 75)
BOOTSTRAP_SAMPLES = 2000


def synthetic_case(n: int, seed: int = 0, bars_per_session: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sticky positions in {-1, 0, +1}, session ordinals, and closes (a random walk around 4,000)
    in which the position held earns EDGE_PER_BAR: about the 75 bps round trip per trade, so the
    equity wanders around the initial capital instead of being ground to zero by costs over 1M
    bars (a ruined account would compare floating-point dust, not accounting)."""
    rng = np.random.default_rng(seed)
    change = rng.random(n) < CHANGE_PROBABILITY
    change[0] = True
    last = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    positions = rng.integers(-1, 2, n)[last].astype(np.int8)
    log_ret = rng.normal(0.0, 5e-4, n)
    log_ret[1:] += EDGE_PER_BAR * positions[:-1]
    close = 4000.0 * np.exp(np.cumsum(log_ret))
    return close, positions, np.arange(n) // bars_per_session


def signals_from_positions(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vectorbt from_signals arrays (entries, exits, short_entries, short_exits) for a position
    series; the last bar is flat as in core.backtest, and a flip is an opposite entry (reverse)."""
    p = np.asarray(positions, dtype=np.int8).copy()
    p[-1] = 0
    prev = np.r_[np.int8(0), p[:-1]]
    changed = p != prev
    return (
        changed & (p == 1),
        changed & (p == 0) & (prev == 1),
        changed & (p == -1),
        changed & (p == 0) & (prev == -1),
    )


def mlp_policy_onnx(
    path: Path | str,
    layers: Sequence[tuple[np.ndarray, np.ndarray]],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a policy graph of the platform's shape (core.onnx_policy): obs (n, d) ->
    probabilities = softmax(last layer), value (n,) = 0, tanh between layers. For tests and
    benchmarks that need a real ONNX policy without training one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from usdcop_platform.core.onnx_export import ONNX_OPSET
    from usdcop_platform.core.onnx_policy import INPUT_NAME, OUTPUT_PROBS, OUTPUT_VALUE

    d = layers[0][0].shape[0]
    nodes, inits = [], []
    x = INPUT_NAME
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"), numpy_helper.from_array(b.astype(np.float32), f"B{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]), helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"z{i}"])]
        x = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Tanh", [x], [f"h{i}"]))
            x = f"h{i}"
    nodes.append(helper.make_node("Softmax", [x], [OUTPUT_PROBS], axis=-1))
    # value = sum(obs * 0) over features: a zero critic with the right (n,) shape
    inits += [numpy_helper.from_array(np.zeros((d, 1), np.float32), "Wv"), numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes += [helper.make_node("MatMul", [INPUT_NAME, "Wv"], ["v2"]), helper.make_node("Squeeze", ["v2", "ax"], [OUTPUT_VALUE])]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", d])],
        [
            helper.make_tensor_value_info(OUTPUT_PROBS, TensorProto.FLOAT, ["n", layers[-1][0].shape[1]]),
            helper.make_tensor_value_info(OUTPUT_VALUE, TensorProto.FLOAT, ["n"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = min(model.ir_version, 9)
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(model)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(p))
    return p


def _vectorbt_run(close: np.ndarray, positions: np.ndarray):
    import pandas as pd
    import vectorbt as vbt

    le, lx, se, sx = signals_from_positions(positions)
    pf = vbt.Portfolio.from_signals(
        pd.Series(close), entries=le, exits=lx, short_entries=se, short_exits=sx,
        size=np.inf, fees=COST_BPS * 1e-4, init_cash=CAPITAL, freq="5min",
    )
    pf.stats()
    return pf


def _policy_replay(ann: Annualization, n_bars: int) -> BenchResult:
    from usdcop_platform.core.onnx_policy import OnnxPolicy
    from usdcop_platform.core.policy_runner import run_policy_over_bars

    rng = np.random.default_rng(1)
    d, h = 15, 64
    layers = [(rng.normal(0, 0.3, (d, h)), np.zeros(h)), (rng.normal(0, 0.3, (h, h)), np.zeros(h)),
              (rng.normal(0, 0.3, (h, 3)), np.zeros(3))]
    with tempfile.TemporaryDirectory() as tmp:
        policy = OnnxPolicy(mlp_policy_onnx(Path(tmp) / "policy.onnx", layers))
        raw = rng.normal(0, 1, (n_bars, d))
        sessions = np.arange(n_bars) // 60
        seconds, _ = time_once(
            lambda: run_policy_over_bars(policy, None, raw, sessions, flat_at_session_end=True, position_index=13)
        )
    return BenchResult(name=f"policy replay (ONNX, sequential) {n_bars:,} bars", value=seconds * 1e3, unit="ms")


def run(quick: bool = False) -> list[BenchResult]:
    from usdcop_platform.core.calendar import default_calendar

    warnings.filterwarnings("ignore")
    ann = Annualization.from_calendar(default_calendar())
    sizes = SIZES_QUICK if quick else SIZES_FULL
    results: list[BenchResult] = []
    # warm vectorbt's numba kernels (compilation is not what we compare)
    warm_close, warm_pos, _ = synthetic_case(2000, seed=99)
    _vectorbt_run(warm_close, warm_pos)
    for n in sizes:
        close, positions, sessions = synthetic_case(n)

        def ours() -> object:
            return backtest(close, positions, sessions, cost_bps=COST_BPS, initial_capital=CAPITAL,
                            annualization=ann, confidence=CONFIDENCE)

        repeat_ours = 5 if quick else (15 if n <= 100_000 else 5)
        repeat_peer = 2 if quick else 3
        ours_s = best_of(ours, repeat_ours)
        peer_s = best_of(lambda: _vectorbt_run(close, positions), repeat_peer)
        mine = ours()
        pf = _vectorbt_run(close, positions)
        speedup = peer_s / ours_s
        is_target_size = n == SIZES_FULL[0]
        met = speedup >= TARGET_SPEEDUP and (not is_target_size or ours_s * 1e3 <= TARGET_MS_90K)
        results.append(
            BenchResult(
                name=f"backtest + all metrics, {n:,} bars",
                value=ours_s * 1e3,
                unit="ms",
                peer="vectorbt 0.28 from_signals + stats",
                peer_value=peer_s * 1e3,
                target=(f"<= {TARGET_MS_90K:g} ms and >= {TARGET_SPEEDUP:g}x vectorbt" if is_target_size
                        else f">= {TARGET_SPEEDUP:g}x vectorbt"),
                met=met,
            )
        )
        rel = abs(float(pf.final_value()) / mine.metrics["final_equity"] - 1.0)
        results.append(
            BenchResult(
                name=f"final equity |relative difference| vs vectorbt, {n:,} bars",
                value=rel,
                unit="rel",
                target=f"<= {AGREEMENT_TOLERANCE:g}",
                met=rel <= AGREEMENT_TOLERANCE,
            )
        )
    # Informational: the full evaluation and the policy replay the backtest asset runs.
    close, positions, sessions = synthetic_case(SIZES_FULL[0])
    eval_s = best_of(
        lambda: evaluate(
            close, positions, sessions, cost_bps=COST_BPS, initial_capital=CAPITAL, annualization=ann,
            confidence=CONFIDENCE, cost_sweep_bps=SWEEP_BPS, bootstrap_block_bars=60,
            bootstrap_samples=BOOTSTRAP_SAMPLES, bootstrap_seed=0, baseline_positions=positions[::-1].copy(),
        ),
        2 if quick else 3,
    )
    results.append(BenchResult(
        name=f"full evaluation (baseline, buy&hold, 6-cost sweep, 2x{BOOTSTRAP_SAMPLES} bootstrap), {SIZES_FULL[0]:,} bars",
        value=eval_s * 1e3, unit="ms",
    ))
    results.append(_policy_replay(ann, int(round(ann.bars_per_year))))
    return results
