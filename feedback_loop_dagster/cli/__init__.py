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

from feedback_loop_dagster.cli.databases import init_db, simulate
from feedback_loop_dagster.cli.demo import demo
from feedback_loop_dagster.cli.errors import LoopGroup
from feedback_loop_dagster.cli.experiments import approve_command, experiments, reject_command, rollback_command
from feedback_loop_dagster.cli.health import health_command
from feedback_loop_dagster.cli.patterns import patterns
from feedback_loop_dagster.cli.policies import policies
from feedback_loop_dagster.cli.runs import backfill_command, run_command
from feedback_loop_dagster.cli.versions import lineage_command, versions
from feedback_loop_dagster.deploy_check import check_config


@click.group(cls=LoopGroup)
@click.option("--debug", is_flag=True, envvar="FEEDBACK_LOOP_DEBUG",
              help="Show the full traceback of errors you can fix too (they print one line otherwise).")
def main(debug: bool) -> None:
    """Feedback loop for patterns, on Dagster."""


for _command in (init_db, simulate, patterns, demo, run_command, backfill_command, policies, versions, experiments,
                 approve_command, reject_command, rollback_command, lineage_command, health_command, check_config):
    main.add_command(_command)
