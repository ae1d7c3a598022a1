"""Stage 5: cumulative sequential A/B results and their sample-ratio check."""
