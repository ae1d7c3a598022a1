"""The Dagster layer: assets, checks, sensors, schedules and resources, one folder per stage."""
