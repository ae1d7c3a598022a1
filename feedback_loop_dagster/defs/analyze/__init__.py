"""Stage 2: metrics per pattern version, regressions against earlier windows."""
