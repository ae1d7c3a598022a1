"""Stage 6: applying, rejecting, reviewing and rolling back."""
