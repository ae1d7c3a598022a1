"""Stage 8: the loop's own health (the original design's Monitoring section)."""
