"""How `serve` runs: the listening socket, the data-dir lock, the supervisor and its workers.

May import: gateway (top-level modules), observe, policy, instances, proxy, relay, http, front.
"""
