"""Stage 4 of the loop: candidate versions, experiments and how callers route traffic to them."""
