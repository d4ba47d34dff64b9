"""The listening server: each connection, then the gateway's own routes, the proxy, the relay.

May import: gateway (top-level modules), wire, observe, policy, instances, proxy, relay, http.
"""
