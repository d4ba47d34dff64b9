"""The gateway's own HTTP routes on aiohttp: app factory, envelope, auth, management API, status.

May import: gateway (top-level modules), observe, policy, instances, proxy, relay.
"""
