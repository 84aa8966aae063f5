"""Unit-test fixtures."""

import pytest


@pytest.fixture(autouse=True)
def _close_rule_logs():
    """A script run in-process may open its rule log (stderr redirected): close it after each test."""
    yield
    from scjepa.logs import stop_rule_log

    stop_rule_log()
