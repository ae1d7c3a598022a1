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
5. Joint streams: a primary metric (latency, 0.3 or 0.2 SD faster) and a
   guardrail (success rate 90% -> 85% / 88% / unchanged, or quality 0.70 ->
   0.65 / 0.68 / unchanged) in the same executions (independent draws per
   execution), default margins, ``feedback_type="performance"``: promoted /
   rejected / undecided by 1,000 per arm and the median executions per arm at
   the decision, for the risk-aware rule (apply only once every guardrail has
   shown non-inferiority) and, on the same streams, the previous rule
   ("apply when no guardrail is breached", with its margins: 1 point of
   success, 0.02 of quality).

Our rule is evaluated with ``feedback_loop_dagster.lib.stats.devtools.vectorized``,
the vectorised twin of ``evaluate_experiment`` that the test suite proves
equal to it look by look (guardrails included); the previous multi-metric
rule is written out here from the same always-valid arrays; the fixed-horizon look and the original rule use
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
from feedback_loop_dagster.lib.stats.devtools.vectorized import (  # noqa: E402
    APPLY,
    CONTINUE,
    REJECT,
    MetricArrays,
    moments_from_sums,
    sequential_decisions,
    student_t_p_arrays,
    two_proportion_z_arrays,
    welch_arrays,
)
from feedback_loop_dagster.lib.stats.sequential import msprt_update_arrays  # noqa: E402

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
    codes, _ = sequential_decisions(MetricArrays(metric, n, mc, vc, n, mt, vt), policy)
    first_code, n_at_decision = first_decisions(codes)

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
        "ours_declares": (first_code != CONTINUE).mean(),
        "ours_applies": (first_code == APPLY).mean(),
        "ours_rejects": (first_code == REJECT).mean(),
        "ours_median_n": float(np.median(n_at_decision[first_code == APPLY])) if (first_code == APPLY).any()
        else float("nan"),
        "fixed_detects": fixed_improves.mean(),
    }


def first_decisions(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each experiment's first non-CONTINUE code (it stops there) and the per-arm n of that look."""
    k = codes.shape[0]
    decided = codes != CONTINUE
    any_decision = decided.any(axis=1)
    first = np.where(any_decision, decided.argmax(axis=1), 0)
    first_code = np.where(any_decision, codes[np.arange(k), first], CONTINUE)
    return first_code, np.where(any_decision, LOOKS[first], -1)


# 5. joint streams ------------------------------------------------------------------

GUARDRAIL_CHANGES = {  # guardrail -> (label, base, changes), the changes in the metric's own scale
    "success": ("success 90%", 0.90, ((-0.05, "-> 85%"), (-0.02, "-> 88%"), (0.0, "unchanged"))),
    "quality": ("quality 0.70", Q_MEAN, ((-0.05, "-> 0.65"), (-0.02, "-> 0.68"), (0.0, "unchanged"))),
}
PREVIOUS_MARGINS = {"success": 0.01, "quality": 0.02}  # the defaults of the previous rule


def _arrays(metric: str, x_c: np.ndarray, x_t: np.ndarray, kind: str = "mean") -> MetricArrays:
    k = x_c.shape[0]
    n = np.broadcast_to(LOOKS.astype(float), (k, LOOKS.size))
    (sc, qc), (st, qt) = cum_at_looks(x_c), cum_at_looks(x_t)
    mc, vc = moments_from_sums(n, sc, qc, kind)
    mt, vt = moments_from_sums(n, st, qt, kind)
    return MetricArrays(metric, n, mc, vc, n, mt, vt)


def previous_rule(primary: MetricArrays, guardrail: MetricArrays, policy: Policy, margin: float) -> np.ndarray:
    """The previous rule's codes: the primary's verdict, rejected on a guardrail *breach* (its
    always-valid interval entirely beyond the margin); an inconclusive guardrail did not block."""
    codes, _ = sequential_decisions(primary, policy)
    p = lo = hi = None
    breach = np.zeros(codes.shape, dtype=bool)
    for j in range(LOOKS.size):
        n_c, n_t = guardrail.n_c[:, j], guardrail.n_t[:, j]
        vc, vt = guardrail.var_c[:, j], guardrail.var_t[:, j]
        delta = guardrail.mean_t[:, j] - guardrail.mean_c[:, j]
        tau2 = policy.sequential_tau ** 2 * 0.5 * (vc + vt)
        p, lo, hi = msprt_update_arrays(delta, vc / n_c + vt / n_t, tau2, policy.significance_level, p, lo, hi)
        breach[:, j] = hi < -margin  # higher is better for success and quality
    return np.where(breach & (codes != REJECT), REJECT, codes)


def joint_cell(rng: np.random.Generator, k: int, speedup_sd: float, guardrail: str, change: float) -> dict:
    """k experiments: latency (log ms ~ N(log 1000, 0.5)) faster by ``speedup_sd`` SD, and the
    guardrail changed by ``change``, drawn independently for every execution."""
    lat_c = rng.normal(LOG_MEAN, LOG_SD, (k, N_MAX))
    lat_t = rng.normal(LOG_MEAN - speedup_sd * LOG_SD, LOG_SD, (k, N_MAX))
    _, base, _ = GUARDRAIL_CHANGES[guardrail]
    if guardrail == "success":
        g_c = (rng.random((k, N_MAX)) < base).astype(float)
        g_t = (rng.random((k, N_MAX)) < base + change).astype(float)
        kind = "proportion"
    else:
        g_c = rng.normal(base, Q_SD, (k, N_MAX))
        g_t = rng.normal(base + change, Q_SD, (k, N_MAX))
        kind = "mean"
    primary = _arrays("latency", lat_c, lat_t)
    guard = _arrays(guardrail, g_c, g_t, kind)
    policy = Policy(feedback_type="performance", significance_level=ALPHA, min_sample_size=30)
    out = {}
    for rule, codes in (("new", sequential_decisions(primary, policy, [guard])[0]),
                        ("old", previous_rule(primary, guard, policy, PREVIOUS_MARGINS[guardrail]))):
        first_code, n_at = first_decisions(codes)
        decided = first_code != CONTINUE
        out[rule] = {
            "promoted": (first_code == APPLY).mean(),
            "rejected": (first_code == REJECT).mean(),
            "undecided": (~decided).mean(),
            "median_n": float(np.median(n_at[decided])) if decided.any() else float("nan"),
        }
    return out


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
    sequential_decisions(MetricArrays("quality", n, z, z + 1.0, n, z + 0.01, z + 1.0), Policy(feedback_type="quality"))
    vec = k * LOOKS.size / (time.perf_counter() - w0)
    print(f"   {'vectorised twin (benchmark path), one metric':54s} {vec:9,.0f} decisions/s wall")
    print()

    # 5. joint streams -----------------------------------------------------------------
    margins = Policy().guardrail_margins
    print("5. Joint streams: latency primary faster, a guardrail in the same executions; looks every 10 per arm "
          "from 30 to 1,000")
    print(f"   new = risk-aware rule, default margins (success {margins.success * 100:g} pts, quality "
          f"{margins.quality:g}); old = apply unless a guardrail is breached (margins success "
          f"{PREVIOUS_MARGINS['success'] * 100:g} pt, quality {PREVIOUS_MARGINS['quality']:g})")
    print("   aims: guardrail 5 pts / 0.05 worse promoted <= 5%; unchanged guardrail with a 0.3 SD gain promoted "
          ">= 90%, median < 800")
    hdr = (f"   {'primary':10s} {'guardrail':22s} {'new promoted':>13s} {'rejected':>9s} {'undecided':>10s} "
           f"{'median n':>9s}   {'old promoted':>13s} {'rejected':>9s} {'undecided':>10s} {'median n':>9s}  aim")
    print(hdr)
    print("   " + "-" * (len(hdr) - 3))
    joint_ok = True
    for guardrail, (base_label, _, changes) in GUARDRAIL_CHANGES.items():
        for speedup in (0.3, 0.2):
            for change, change_label in changes:
                r = joint_cell(rng_for(), k, speedup, guardrail, change)
                new, old = r["new"], r["old"]
                aim = ""
                if change == -0.05:
                    ok = new["promoted"] <= 0.05
                    aim = f"<=5%: {'ok' if ok else 'MISSED'}"
                    joint_ok &= ok
                elif change == 0.0 and speedup == 0.3:
                    ok = new["promoted"] >= 0.90 and new["median_n"] < 800
                    aim = f">=90%, <800: {'ok' if ok else 'MISSED'}"
                    joint_ok &= ok
                print(f"   {f'-{speedup:.1f} SD':10s} {f'{base_label} {change_label}':22s} {pct(new['promoted']):>13s} "
                      f"{pct(new['rejected']):>9s} {pct(new['undecided']):>10s} {new['median_n']:>9.0f}   "
                      f"{pct(old['promoted']):>13s} {pct(old['rejected']):>9s} {pct(old['undecided']):>10s} "
                      f"{old['median_n']:>9.0f}  {aim}")
    print("   (median n = executions per arm at the first decision, promoted or rejected; undecided = no decision "
          "by 1,000 per arm)")
    print()
    print(f"summary: A/A {'ok' if aa_ok else 'MISSED'}; regression {'ok' if reg_ok else 'MISSED'}; "
          f"improvements {'ok' if imp_ok else 'MISSED'}; speed {'ok' if sp_ok else 'MISSED'}; "
          f"joint streams {'ok' if joint_ok else 'MISSED'}; total time {time.perf_counter() - t_start:.0f} s; "
          f"seed={seed}")


if __name__ == "__main__":
    main()
