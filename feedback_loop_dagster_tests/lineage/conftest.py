"""Fixtures of the lineage tests."""

from __future__ import annotations

import pytest

from feedback_loop_dagster_tests.lineage.builders import family_of_versions


@pytest.fixture
def family(engine):
    """v1 -> v2 (promoted in W1, rolled back in W2), v1 -> v3 (a branch), v4 = v2 + merged v3 (a
    running candidate from W3); `{version name: version}`."""
    return family_of_versions(engine)
