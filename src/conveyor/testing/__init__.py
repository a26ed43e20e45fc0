"""Contract test suites that plugin and backend authors subclass (pytest)."""
