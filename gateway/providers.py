"""The LLM providers an instance may name, and how each is reached by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PROVIDERS", "ProviderSpec", "provider_names"]


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    # "openai": speaks Chat Completions (passed through); "anthropic": Messages API (translated).
    wire: Literal["openai", "anthropic"]
    # "" means the instance must bring its own base URL.
    default_base_url: str
    # How the key is presented: bearer token, Anthropic's x-api-key, or Azure's api-key.
    auth: Literal["bearer", "x-api-key", "api-key"] = "bearer"
    # Local servers (ollama, vllm) usually run without a key.
    keyless: bool = False


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("openai", "openai", "https://api.openai.com/v1"),
        ProviderSpec("anthropic", "anthropic", "https://api.anthropic.com", auth="x-api-key"),
        ProviderSpec("deepseek", "openai", "https://api.deepseek.com/v1"),
        ProviderSpec("qwen", "openai", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        ProviderSpec("siliconflow", "openai", "https://api.siliconflow.cn/v1"),
        ProviderSpec("zai", "openai", "https://open.bigmodel.cn/api/paas/v4"),
        ProviderSpec("ollama", "openai", "http://localhost:11434/v1", keyless=True),
        ProviderSpec("vllm", "openai", "http://localhost:8000/v1", keyless=True),
        ProviderSpec("gemini", "openai", "https://generativelanguage.googleapis.com/v1beta/openai"),
        # Azure has no global endpoint: the resource URL (…/openai/v1) is the base URL.
        ProviderSpec("azure", "openai", "", auth="api-key"),
        ProviderSpec("openrouter", "openai", "https://openrouter.ai/api/v1"),
    )
}


def provider_names() -> list[str]:
    return sorted(PROVIDERS)
