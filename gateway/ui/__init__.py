"""The admin page at `/gateway/ui`: instances, their usage, the wiring, and the admin's actions.

Plain HTML built on the server (no build step, no third-party code): it works with JavaScript
off, under a strict Content-Security-Policy. Every action calls the registry exactly as the
management API and the CLI do, so it lands in the same audit trail.

May import: gateway (top-level modules), observe, instances, proxy, relay, http, clients.
"""
