"""`health`: the loop's own health, per pattern and over all patterns."""

from __future__ import annotations

from datetime import date

import click

from feedback_loop_dagster.cli.common import DATE, echo_json, echo_table, ensure_warehouse, pattern_named, warehouse_engine
from feedback_loop_dagster.lib.clock import utc_today
from feedback_loop_dagster.lib.errors import InvalidInput


@click.command("health")
@click.argument("pattern", required=False)
@click.option("--as-of", "as_of", type=DATE, help="As of the end of this window [default: today, UTC].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also write the plot over time to this SVG file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def health_command(pattern: str | None, as_of: date | None, plot_path: str | None, as_json: bool) -> None:
    """Loop health (the design's Monitoring section) per pattern and over all patterns, or for
    PATTERN (an id or a partition key) and overall: improvement accuracy (promotions confirmed by
    their watch, target > 90%), false-positive rate (promotions rolled back, target < 5%), mean
    effect of promotions in each lead metric's unit, days between improvements, rejection rate,
    and A/B experiments inconclusive, running and pending review."""
    from feedback_loop_dagster.lib.report.health import (
        ACCURACY_TARGET,
        FALSE_POSITIVE_TARGET,
        health_as_of,
        health_over_time,
        health_report,
        health_row,
        load_history,
    )

    ensure_warehouse()
    pattern_id = pattern_named(pattern) if pattern is not None else None
    as_of = as_of or utc_today()
    with warehouse_engine().connect() as conn:
        history = load_history(conn)
    per_pattern, overall = health_report(history, as_of)
    if pattern_id is not None:
        per_pattern = [health_as_of(history, as_of, pattern_id)]
    if plot_path:
        from feedback_loop_dagster.lib.report.health_picture import health_svg

        title = f"{pattern_id if pattern_id is not None else 'all patterns'}: loop health as of {as_of}"
        picture = health_svg(title, health_over_time(history, as_of, pattern_id))
        try:
            with open(plot_path, "w", encoding="utf-8") as handle:
                handle.write(picture)
        except OSError as exc:
            raise InvalidInput(f"cannot write --plot {plot_path!r}: {exc.strerror}") from None
    if as_json:
        echo_json({"as_of": as_of.isoformat(),
                   "targets": {"improvement_accuracy": ACCURACY_TARGET, "false_positive_rate": FALSE_POSITIVE_TARGET},
                   "overall": overall.to_dict(), "patterns": [h.to_dict() for h in per_pattern]})
        return
    click.echo(f"loop health as of {as_of} (targets: accuracy > {ACCURACY_TARGET:.0%}, "
               f"false positives < {FALSE_POSITIVE_TARGET:.0%})")
    echo_table([health_row(h) for h in [overall, *per_pattern]], empty="no patterns yet")
    if plot_path:
        click.echo(f"plot over time: {plot_path}")
