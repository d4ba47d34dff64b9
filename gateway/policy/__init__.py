"""Rules about where and how often: the base-URL policy for outbound calls, rate limits.

May import: gateway (top-level modules), observe.
"""
