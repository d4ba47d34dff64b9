"""What the gateway tells its operator: logs (with redaction), metrics, the audit trail.

May import: gateway (top-level modules).
"""
