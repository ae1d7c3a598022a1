"""`feedback-loop`: set up the databases, simulate executions, and run the loop from the shell.

One module per command group: `databases` (init-db, simulate), `patterns` (sync, list), `runs`
(run, backfill), `demo`, `policies`, `versions` (and lineage), `experiments` (and approve, reject,
rollback), `health`; `check-config` comes from deploy_check.py. The commands only parse and print:
what they read comes from lib/ (read models in lib/report/, the source in lib/collect/source.py).

Every command prints a human-readable table by default and JSON with `--json` (lineage:
`--format json`); errors a user can fix print one `error: ...` line and exit with status 1
(errors.LoopGroup); a failed run exits with status 2. A pattern is named by its id or its partition
key (common.pattern_named).
"""

from __future__ import annotations

import click

from feedback_loop_dagster.cli.errors import LoopGroup


@click.group(cls=LoopGroup)
@click.option("--debug", is_flag=True, envvar="FEEDBACK_LOOP_DEBUG",
              help="Show the full traceback of errors you can fix too (they print one line otherwise).")
def main(debug: bool) -> None:
    """Feedback loop for patterns, on Dagster."""


def _add_commands() -> None:
    # Inside a function, so that `feedback_loop_dagster.cli.policies` (and the other groups) stay the
    # modules: a command imported at package level would shadow its module of the same name.
    from feedback_loop_dagster.cli import databases, demo, experiments, health, patterns, policies, runs, versions
    from feedback_loop_dagster.deploy_check import check_config

    for command in (databases.init_db, databases.simulate, patterns.patterns, demo.demo, runs.run_command,
                    runs.backfill_command, policies.policies, versions.versions, versions.lineage_command,
                    experiments.experiments, experiments.approve_command, experiments.reject_command,
                    experiments.rollback_command, health.health_command, check_config):
        main.add_command(command)


_add_commands()
