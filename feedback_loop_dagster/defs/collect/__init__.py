"""Stage 1: collect and validate feedback per (pattern, window)."""
