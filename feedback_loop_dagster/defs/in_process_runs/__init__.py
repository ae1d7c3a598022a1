"""Runs the CLI, the demo and the Python API launch in their own process: how they are recorded as
the code location's runs, what happens when their process dies, and what failed in them."""
