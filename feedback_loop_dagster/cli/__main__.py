"""`python -m feedback_loop_dagster.cli`: the `feedback-loop` command without its console script."""

from feedback_loop_dagster.cli import main

main()
