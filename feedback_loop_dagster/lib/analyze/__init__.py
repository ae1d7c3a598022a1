"""Stage 2 of the loop: metrics per pattern version, daily sufficient statistics, regressions."""
