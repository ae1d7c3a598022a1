"""Stage 5 of the loop: cumulative, sequential A/B results of running experiments."""
