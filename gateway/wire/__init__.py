"""HTTP/1.1 on the wire: request and response heads, body framing, pooled client connections.

May import: gateway (top-level modules).
"""
