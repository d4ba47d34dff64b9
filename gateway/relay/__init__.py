"""The LLM relay: which provider a call goes to, the outbound client, the Anthropic translation.

May import: gateway (top-level modules), wire, observe, policy, instances, proxy.
"""
