"""Stage 3 of the loop: turn evidence into typed improvement proposals."""
