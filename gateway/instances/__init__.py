"""The instance registry: model, store of record, lookup cache, key encryption, rotation.

May import: gateway (top-level modules), observe, policy.
"""
