"""Instances: model, registry (cache, caps, secrets, usage), the Store protocol and SQLite store,
key encryption and rotation, instances.yaml. See registry.py for the map.

May import: gateway (top-level modules), observe, policy.
"""
