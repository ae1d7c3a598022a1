"""What the code location declares besides the stages' assets: its partitions, resources (the
databases, the clock), job, schedule and the Dagster settings it runs with."""
