"""Shared pytest setup: plugins that provide real backing services."""

pytest_plugins = ["tests.fixtures.s3"]
