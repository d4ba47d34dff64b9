"""powermem-gateway: many AI coding tools, one powermem server, each with its own LLM."""

__version__ = "0.1.0"
