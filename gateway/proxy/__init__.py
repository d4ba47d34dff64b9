"""The way to powermem: which instance a request binds to, its baggage, the upstream server.

May import: gateway (top-level modules), wire, observe, policy, instances.
"""
