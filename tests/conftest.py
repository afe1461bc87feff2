"""The suite's own pytest plugins (shared helpers once, as plugins)."""

pytest_plugins = ["tests._serial", "tests._process", "tests._brokers"]
