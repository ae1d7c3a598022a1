"""Fixtures of the integration tests: one real deployment (daemon + webserver over PostgreSQL) shared
by the tests of the session, and a hang guard on every test."""

from __future__ import annotations

import signal

import pytest

from feedback_loop_dagster_tests.conftest import postgres_admin_url
from feedback_loop_dagster_tests.integration.harness import Deployment

# No integration test may run longer than this (its own fixtures included). It only guards against a
# hang: the tests' waits fail much earlier when the deployment stops making progress (harness.py,
# STALL_SECONDS), and a loaded machine (2 cores at load average 20) only slows them down. On an idle
# 2-CPU machine each takes 1-2 minutes. The deployment's processes are stopped by the fixtures'
# teardown either way.
TEST_TIMEOUT_SECONDS = 3600


class IntegrationTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request):
    def _expired(signum, frame):
        raise IntegrationTimeout(f"{request.node.nodeid} ran longer than {TEST_TIMEOUT_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(TEST_TIMEOUT_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    """dagster-daemon and dagster-webserver on 127.0.0.1 over fresh PostgreSQL databases, the daemon's
    loops and the sensor coming round every second; stopped (by pid) and the databases dropped at the
    end of the session."""
    admin_url = postgres_admin_url()
    with Deployment(tmp_path_factory.mktemp("deployment"), admin_url, sensor_interval_seconds=1, daemon_loop_seconds=1,
                    durable_commits=False) as d:
        d.start_daemon()
        d.start_webserver()
        yield d
