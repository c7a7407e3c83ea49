"""Shared fixtures. Each group lives in tests/fixtures/ and is loaded here explicitly."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.db",
    "tests.fixtures.amqp",
    "tests.fixtures.slack",
    "tests.fixtures.bot",
]
