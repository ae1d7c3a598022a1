"""Self-check of the A/B engine by simulation (a benchmark, not a test).

Runs seeded simulated experiments, in the spirit of GrowthBook gbstats' own
simulation studies, with a look after every batch of 10 executions per arm
from 30 to 1,000, and prints:

1. A/A (no true difference) for a normal metric (quality score), a lognormal
   latency and a Bernoulli success rate at 0.9: the false-positive rate and
   the wrong auto-apply rate of (a) the original rule -- a two-sided Student t
   test on the raw values after every look, "declare a difference" when
   1 - p >= 0.95, "auto-apply" when that happens with the treatment's mean
   higher (the original treated a positive delta as better for every metric)
   -- and (b) our default (always-valid mSPRT, alpha = 0.05, directional).
2. A planted regression (treatment 10 % worse): how often each rule applies it.
3. Planted improvements of 0.1, 0.2, 0.3 standard deviations of each metric
   (success rate: base 0.80, +4/+8/+12 points): detection by 1,000 per arm and
   the median executions per arm at the moment of the decision, ours against
   one fixed-horizon look at 1,000 per arm.
4. Speed: decisions per second of ``evaluate_experiment`` from sufficient
   statistics (all five metrics present), in one process.

Our rule is evaluated with ``feedback_loop_dagster.lib.stats.vectorized``,
the vectorised twin of ``evaluate_experiment`` that the test suite proves
equal to it look by look; the fixed-horizon look and the original rule use
the vectorised Welch / z / Student tests, also checked against the scalar
engine (and that against scipy / statsmodels).

Usage::

    python benchmarks/ab_engine_simulation.py [--seed 20240601] [--experiments 2000]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from feedback_loop_dagster.lib.stats import (  # noqa: E402
    ArmStats,
    LogMeanStats,
    MeanStats,
    Policy,
    ProportionStats,
    evaluate_experiment,
)
from feedback_loop_dagster.lib.stats.vectorized import (  # noqa: E402
    APPLY,
    CONTINUE,
    REJECT,
    moments_from_sums,
    sequential_decisions,
    student_t_p_arrays,
    two_proportion_z_arrays,
    welch_arrays,
)

LOOKS = np.arange(30, 1001, 10)          # per-arm sample size at each look
N_MAX = int(LOOKS[-1])
ALPHA = 0.05
THRESHOLD = 0.95                         # the original rule: 1 - p >= 0.95

# The three simulated metrics, as (engine metric, feedback_type, label)
METRICS = {
    "normal": ("quality", "quality", "normal (quality ~ N(0.70, 0.15))"),
    "lognormal": ("latency", "performance", "lognormal latency (log ms ~ N(log 1000, 0.5))"),
    "bernoulli": ("success", "reliability", "Bernoulli success rate"),
}
Q_MEAN, Q_SD = 0.70, 0.15
LOG_MEAN, LOG_SD = math.log(1000.0), 0.5


def draw(rng: np.random.Generator, kind: str, k: int, shift: float, base_p: float = 0.9) -> np.ndarray:
    """k x N_MAX observations.  ``shift``: additive on the value scale (normal),
    on the log scale (lognormal: returns durations), on the rate (Bernoulli)."""
    if kind == "normal":
        return rng.normal(Q_MEAN + shift, Q_SD, (k, N_MAX))
    if kind == "lognormal":
        return np.exp(rng.normal(LOG_MEAN + shift, LOG_SD, (k, N_MAX)))
    return (rng.random((k, N_MAX)) < base_p + shift).astype(float)


def cum_at_looks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = LOOKS - 1
    return np.cumsum(x, axis=1)[:, idx], np.cumsum(x * x, axis=1)[:, idx]


def run_cell(rng: np.random.Generator, kind: str, k: int, shift: float, base_p: float = 0.9) -> dict:
    """Simulate k experiments; return what each rule did."""
    metric, ftype, _ = METRICS[kind]
    c_raw = draw(rng, kind, k, 0.0, base_p)
    t_raw = draw(rng, kind, k, shift, base_p)
    n = np.broadcast_to(LOOKS.astype(float), (k, LOOKS.size))

    # (a) the original rule: Student t on the raw values at every look
    (sc, qc), (st, qt) = cum_at_looks(c_raw), cum_at_looks(t_raw)
    mc, vc = moments_from_sums(n, sc, qc)
    mt, vt = moments_from_sums(n, st, qt)
    p_orig = student_t_p_arrays(mc, vc, n, mt, vt, n)
    declared = (1.0 - p_orig) >= THRESHOLD
    orig_declares = declared.any(axis=1)
    orig_applies = (declared & (mt > mc)).any(axis=1)

    # (b) ours: the engine's rule on the metric's own scale (log for latency)
    if kind == "lognormal":
        (sc, qc), (st, qt) = cum_at_looks(np.log(c_raw)), cum_at_looks(np.log(t_raw))
        mc, vc = moments_from_sums(n, sc, qc)
        mt, vt = moments_from_sums(n, st, qt)
    elif kind == "bernoulli":
        mc, vc = moments_from_sums(n, sc, kind="proportion")
        mt, vt = moments_from_sums(n, st, kind="proportion")
    policy = Policy(feedback_type=ftype, significance_level=ALPHA, auto_apply_threshold=THRESHOLD,
                    min_sample_size=30)
    codes, _ = sequential_decisions(metric, n, mc, vc, n, mt, vt, policy)
    decided = codes != CONTINUE
    any_decision = decided.any(axis=1)
    first = np.where(any_decision, decided.argmax(axis=1), -1)
    first_code = np.where(any_decision, codes[np.arange(k), np.maximum(first, 0)], CONTINUE)
    n_at_decision = np.where(any_decision, LOOKS[np.maximum(first, 0)], -1)

    # (c) one fixed-horizon look at 1,000 per arm (Welch / two-proportion z), directional
    j = LOOKS.size - 1
    if kind == "bernoulli":
        _, p_fix, lo, hi = two_proportion_z_arrays(sc[:, j], n[:, j], st[:, j], n[:, j], ALPHA)
    else:
        _, _, p_fix, lo, hi = welch_arrays(mc[:, j], vc[:, j], n[:, j], mt[:, j], vt[:, j], n[:, j], ALPHA)
    better_sign = -1.0 if kind == "lognormal" else 1.0
    fixed_improves = (p_fix <= ALPHA) & ((lo > 0) if better_sign > 0 else (hi < 0))

    return {
        "orig_declares": orig_declares.mean(),
        "orig_applies": orig_applies.mean(),
        "ours_declares": any_decision.mean(),
        "ours_applies": (first_code == APPLY).mean(),
        "ours_rejects": (first_code == REJECT).mean(),
        "ours_median_n": float(np.median(n_at_decision[first_code == APPLY])) if (first_code == APPLY).any()
        else float("nan"),
        "fixed_detects": fixed_improves.mean(),
    }


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def speed(seed: int, count: int = 20000) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng([seed, 99])

    def arm(n: int, shift: float) -> ArmStats:
        return ArmStats(
            n, ProportionStats(n, int(rng.binomial(n, 0.9))),
            LogMeanStats(n, *_sums(rng.normal(7.0 + shift, 0.5, n))),
            MeanStats(n, *_sums(rng.normal(0.7, 0.15, n))),
            MeanStats(n, *_sums(rng.random(n))),
            MeanStats(n, *_sums(rng.poisson(0.2, n).astype(float))),
        )

    pairs = [(arm(int(n), 0.0), arm(int(n), float(rng.normal(0, 0.05)))) for n in rng.integers(30, 2000, count)]
    out = []
    for label, pol in (("feedback_type=performance (1 primary + 4 guardrails)", Policy(feedback_type="performance")),
                       ("feedback_type=all (3 primaries, Holm + 2 guardrails)", Policy(feedback_type="all"))):
        for c, t in pairs[:200]:  # warm-up
            evaluate_experiment(c, t, pol)
        w0, c0 = time.perf_counter(), time.process_time()
        for c, t in pairs:
            evaluate_experiment(c, t, pol)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out.append((label, count / wall, count / cpu))
    return out


def _sums(x: np.ndarray) -> tuple[float, float]:
    return float(x.sum()), float(np.dot(x, x))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--experiments", type=int, default=2000, help="simulated experiments per cell")
    ap.add_argument("--speed-decisions", type=int, default=20000)
    args = ap.parse_args(argv)
    k, seed = args.experiments, args.seed
    t_start = time.perf_counter()
    mc_se = math.sqrt(ALPHA * (1 - ALPHA) / k)

    print("A/B engine self-check (benchmarks/ab_engine_simulation.py)")
    print(f"seed={seed}  experiments per cell={k}  looks: every 10 executions per arm from 30 to 1,000 "
          f"({LOOKS.size} looks)")
    print(f"ours = always-valid mSPRT (normal mixture, tau = 0.2 pooled sd), alpha={ALPHA}, "
          f"auto_apply_threshold={THRESHOLD}, min_sample_size=30, directional")
    print(f"original = two-sided Student t on raw values at every look; declares when 1-p >= {THRESHOLD}; "
          "applies when it declares and the treatment's mean is higher")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpu(s)")
    print()

    cell = 0

    def rng_for() -> np.random.Generator:
        nonlocal cell
        cell += 1
        return np.random.default_rng([seed, cell])

    # 1. A/A -------------------------------------------------------------------
    print("1. A/A (no true difference): false-positive rate and wrong auto-apply rate")
    print(f"   Monte-Carlo standard error at alpha: {100 * mc_se:.2f} points; aim: ours <= alpha + 2 s.e. "
          f"= {100 * (ALPHA + 2 * mc_se):.1f}%")
    hdr = f"   {'metric':46s} {'orig FPR':>9s} {'orig apply':>11s} {'ours FPR':>9s} {'ours apply':>11s}  aim"
    print(hdr)
    print("   " + "-" * (len(hdr) - 3))
    aa_ok = True
    for kind in METRICS:
        r = run_cell(rng_for(), kind, k, 0.0)
        ok = r["ours_declares"] <= ALPHA + 2 * mc_se
        aa_ok &= ok
        print(f"   {METRICS[kind][2]:46s} {pct(r['orig_declares']):>9s} {pct(r['orig_applies']):>11s} "
              f"{pct(r['ours_declares']):>9s} {pct(r['ours_applies']):>11s}  {'ok' if ok else 'MISSED'}")
    print()

    # 2. planted regression ---------------------------------------------------------
    print("2. Planted regression, treatment 10% worse: how often each rule applies it")
    hdr = f"   {'metric (regression)':46s} {'orig apply':>11s} {'ours apply':>11s} {'ours reject':>12s}  aim"
    print(hdr)
    print("   " + "-" * (len(hdr) - 3))
    reg_ok = True
    regressions = {
        "normal": (-0.1 * Q_MEAN, "quality 0.70 -> 0.63"),
        "lognormal": (math.log(1.1), "latency x1.10 (slower)"),
        "bernoulli": (-0.09, "success rate 0.90 -> 0.81"),
    }
    for kind, (shift, label) in regressions.items():
        r = run_cell(rng_for(), kind, k, shift)
        ok = r["ours_applies"] == 0.0
        reg_ok &= ok
        print(f"   {label:46s} {pct(r['orig_applies']):>11s} {pct(r['ours_applies']):>11s} "
              f"{pct(r['ours_rejects']):>12s}  {'ok' if ok else 'MISSED'}")
    print()

    # 3. planted improvements ----------------------------------------------------
    print("3. Planted improvements: detection by 1,000 per arm; median executions per arm at the decision")
    hdr = (f"   {'metric':24s} {'effect':>14s} {'ours detect':>12s} {'ours median n':>14s} {'ours wrong':>11s} "
           f"{'fixed@1000':>11s}  aim")
    print(hdr)
    print("   " + "-" * (len(hdr) - 3))
    imp_ok = True
    aims = {0.2: (0.90, 500), 0.3: (0.99, 300)}
    for kind in METRICS:
        for sd_units in (0.1, 0.2, 0.3):
            if kind == "normal":
                shift, eff = sd_units * Q_SD, f"+{sd_units:.1f} sd"
            elif kind == "lognormal":
                shift, eff = -sd_units * LOG_SD, f"-{sd_units:.1f} sd (log)"
            else:
                shift, eff = 0.4 * sd_units, f"0.80 -> {0.80 + 0.4 * sd_units:.2f}"
            r = run_cell(rng_for(), kind, k, shift, base_p=0.80)
            aim = ""
            if sd_units in aims:
                need_rate, need_median = aims[sd_units]
                ok = r["ours_applies"] >= need_rate and r["ours_median_n"] < need_median
                imp_ok &= ok
                aim = f">={100 * need_rate:.0f}%, <{need_median}: {'ok' if ok else 'MISSED'}"
            name = {"normal": "normal (quality)", "lognormal": "lognormal latency",
                    "bernoulli": "Bernoulli success"}[kind]
            print(f"   {name:24s} {eff:>14s} {pct(r['ours_applies']):>12s} {r['ours_median_n']:>14.0f} "
                  f"{pct(r['ours_rejects']):>11s} {pct(r['fixed_detects']):>11s}  {aim}")
    print("   (ours wrong = rejected as harmful; fixed@1000 = one Welch / z look at 1,000 per arm, "
          "its median n is 1,000 by construction)")
    print()

    # 4. speed ---------------------------------------------------------------------
    print(f"4. Speed: evaluate_experiment from sufficient statistics, {args.speed_decisions} random experiments, "
          "one process")
    sp_ok = True
    for label, per_wall, per_cpu in speed(seed, args.speed_decisions):
        ok = per_cpu > 10000
        sp_ok &= ok
        print(f"   {label:54s} {per_wall:9,.0f} decisions/s wall   {per_cpu:9,.0f} /s cpu  "
              f"{'ok' if ok else 'below 10,000/s'}")
    # the vectorised twin, for scale
    n = np.broadcast_to(LOOKS.astype(float), (k, LOOKS.size))
    z = np.zeros((k, LOOKS.size))
    w0 = time.perf_counter()
    sequential_decisions("quality", n, z, z + 1.0, n, z + 0.01, z + 1.0, Policy(feedback_type="quality"))
    vec = k * LOOKS.size / (time.perf_counter() - w0)
    print(f"   {'vectorised twin (benchmark path), one metric':54s} {vec:9,.0f} decisions/s wall")
    print()
    print(f"summary: A/A {'ok' if aa_ok else 'MISSED'}; regression {'ok' if reg_ok else 'MISSED'}; "
          f"improvements {'ok' if imp_ok else 'MISSED'}; speed {'ok' if sp_ok else 'MISSED'}; "
          f"total time {time.perf_counter() - t_start:.0f} s; seed={seed}")


if __name__ == "__main__":
    main()
