#!/bin/sh
# Fail at start, in one line, when a variable the deployment needs is missing (feedback-loop
# check-config), then run the container's command. Set FEEDBACK_LOOP_SKIP_CHECK=1 to skip it
# (e.g. for run workers that Dagster starts with the instance config it passes itself).
set -e
if [ "${FEEDBACK_LOOP_SKIP_CHECK:-0}" != "1" ]; then
  feedback-loop check-config
fi
# Dagster's event levers of the code location (defs/code_location/event_levers.py) for every process of the image:
# dagster-daemon and dagster-webserver create runs and their planned events without importing it.
for lever in $(python -m feedback_loop_dagster.defs.code_location.event_levers); do
  export "$lever"
done
exec "$@"
