"""Stage 3: improvement proposals from the evidence."""
