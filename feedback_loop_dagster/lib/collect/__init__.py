"""Stage 1 of the loop: collect each pattern's executions per window, normalise, validate, quarantine."""
