"""Milliseconds per picture a partition carries: one pattern's lineage picture (the family of the
lineage tests: branches, a merge, a promotion, a rollback, a running candidate) and one health plot
over 90 windows. Both are drawn once per partition of a run, so at 1,000 patterns they are the
per-pattern cost of `pattern_lineage` and `loop_health`.

    .venv/bin/python -m benchmarks.partition_pictures [--repeat 20]

Timings depend on the machine's load: note `uptime` with them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from feedback_loop_dagster.defs.health.plot import health_plot_markdown
from feedback_loop_dagster.defs.lineage.assets import lineage_picture_metadata
from feedback_loop_dagster.lib.lineage import lineage_graph
from feedback_loop_dagster.lib.report.health import Health
from feedback_loop_dagster.lib.storage.database import get_engine
from feedback_loop_dagster.lib.storage.migrations import init_databases
from feedback_loop_dagster_tests.lineage.builders import W3, P, family_of_versions


def health_series(days: int = 90) -> list[Health]:
    """A pattern's health over `days` windows: promotions every 9 days, every third rolled back,
    an experiment always running, a review pending now and then."""
    first = date(2026, 1, 1)
    series = []
    for i in range(days):
        promotions, rolled_back = i // 9, i // 27
        confirmed = max(promotions - rolled_back - 1, 0)
        series.append(Health(
            pattern_id=P, as_of=first + timedelta(days=i), promotions=promotions, confirmed=confirmed,
            rolled_back=rolled_back, under_watch=promotions - confirmed - rolled_back,
            improvement_accuracy=confirmed / promotions if promotions else None,
            false_positive_rate=rolled_back / promotions if promotions else None,
            ab_ended=promotions + i // 12, rejected=i // 15, inconclusive=i // 30, running=1,
            pending_review=int(i % 7 == 3),
        ))
    return series


def per_call_ms(call, repeat: int) -> tuple[float, int]:
    """(median milliseconds per call, characters of the markdown it returns)."""
    size = len(str(call()))  # the first call pays for imports and font caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = get_engine(f"sqlite:///{Path(folder) / 'pictures.db'}")
        init_databases(engine, engine)
        family_of_versions(engine)
        with engine.connect() as conn:
            graph = lineage_graph(conn, P, W3)
        engine.dispose()
    series = health_series()
    lineage_ms, lineage_chars = per_call_ms(lambda: lineage_picture_metadata(P, graph)["graph"].value, args.repeat)
    health_ms, health_chars = per_call_ms(lambda: health_plot_markdown(f"{P}: loop health", series), args.repeat)
    print(f"lineage picture ({len(graph)} versions, {len(graph.edges)} edges): {lineage_ms:.1f} ms, {lineage_chars} chars")
    print(f"health plot ({len(series)} windows): {health_ms:.1f} ms, {health_chars} chars")


if __name__ == "__main__":
    main()
