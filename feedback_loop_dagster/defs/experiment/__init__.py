"""Stage 4: candidate versions and running experiments."""
