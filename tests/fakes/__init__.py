"""Real local HTTP servers that stand in for third-party services in tests."""
