"""The gateway's own HTTP routes on aiohttp: app factory, envelope, auth, management API, status.

The app factory also mounts the admin page (`gateway.ui`), which is built on this package's
auth, status and readiness, hence `ui` below (only `app` imports it).

May import: gateway (top-level modules), observe, policy, instances, proxy, relay, ui.
"""
