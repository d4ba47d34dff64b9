"""The minimal `~/.powermem/.env` that `powermem-gateway init` writes: a working embedded setup.

SQLite storage (nothing else to run), an embedder the user chose (powermem's own default
downloads a model and needs a package the gateway does not install), and the default LLM,
each explained by a comment. Values are written bare, in the format every env-file reader
and powermem itself read alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import InvalidConfig
from gateway.proxy.upstream_env import render_env

__all__ = ["EMBEDDERS", "LLMS", "EmbedderSpec", "InitChoice", "LlmSpec", "render_init_env"]


@dataclass(frozen=True)
class LlmSpec:
    model: str
    key_variable: str  # the conventional variable holding this provider's key ("" = keyless)
    base_url_setting: str  # powermem's base-URL variable for this provider
    base_url_variable: str = ""  # a conventional variable the provider's own SDK reads


@dataclass(frozen=True)
class EmbedderSpec:
    model: str
    dims: int
    base_url_setting: str
    keyless: bool = False


# The LLM providers the relay serves as a default (gateway.proxy.upstream_env.default_llm).
LLMS: dict[str, LlmSpec] = {
    "openai": LlmSpec("gpt-4o-mini", "OPENAI_API_KEY", "OPENAI_LLM_BASE_URL", "OPENAI_BASE_URL"),
    "anthropic": LlmSpec(
        "claude-sonnet-4-6", "ANTHROPIC_API_KEY", "ANTHROPIC_LLM_BASE_URL", "ANTHROPIC_BASE_URL"
    ),
    "deepseek": LlmSpec("deepseek-chat", "DEEPSEEK_API_KEY", "DEEPSEEK_LLM_BASE_URL"),
    "qwen": LlmSpec("qwen-plus", "DASHSCOPE_API_KEY", "QWEN_LLM_BASE_URL"),
    "siliconflow": LlmSpec("Qwen/Qwen3-8B", "SILICONFLOW_API_KEY", "SILICONFLOW_LLM_BASE_URL"),
    "zai": LlmSpec("glm-4.5-flash", "ZAI_API_KEY", "ZAI_BASE_URL"),
    "gemini": LlmSpec("gemini-2.5-flash", "GEMINI_API_KEY", ""),
    "ollama": LlmSpec("llama3.1", "", "OLLAMA_LLM_BASE_URL"),
    "vllm": LlmSpec("", "", "VLLM_LLM_BASE_URL"),
}

# powermem 1.1.7's embedders that need no extra package and no model download.
EMBEDDERS: dict[str, EmbedderSpec] = {
    "openai": EmbedderSpec("text-embedding-3-small", 1536, "OPENAI_EMBEDDING_BASE_URL"),
    "qwen": EmbedderSpec("text-embedding-v4", 1536, "QWEN_EMBEDDING_BASE_URL"),
    "siliconflow": EmbedderSpec("BAAI/bge-m3", 1024, "SILICONFLOW_EMBEDDING_BASE_URL"),
    "ollama": EmbedderSpec("nomic-embed-text", 768, "OLLAMA_EMBEDDING_BASE_URL", keyless=True),
}


@dataclass(frozen=True)
class InitChoice:
    llm_provider: str
    llm_model: str
    llm_api_key: str
    llm_base_url: str
    embedding_provider: str
    embedding_model: str
    embedding_dims: int
    embedding_api_key: str
    embedding_base_url: str
    sqlite_path: Path


def _section(comment: str, values: dict[str, str]) -> str:
    lines = "".join(f"# {line}\n" for line in comment.splitlines())
    return lines + render_env({k: v for k, v in values.items() if v != "\0"}) + "\n"


def render_init_env(choice: InitChoice) -> str:
    """The commented `.env` text for `choice`; `InvalidConfig` for an unwritable value."""
    if choice.llm_provider not in LLMS:
        raise InvalidConfig(f"--llm-provider: use one of {', '.join(LLMS)}.")
    if choice.embedding_provider not in EMBEDDERS:
        raise InvalidConfig(f"--embedding-provider: use one of {', '.join(EMBEDDERS)}.")
    llm = LLMS[choice.llm_provider]
    embedder = EMBEDDERS[choice.embedding_provider]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    text = (
        f"# powermem's settings, written by `powermem-gateway init` on {stamp}.\n"
        "# Read by powermem-server and by the gateway; init never overwrites this file.\n"
        "# Keys are stored here in plain text: keep the file private (mode 0600).\n\n"
    )
    text += _section(
        "Storage: an embedded SQLite file, nothing else to run.",
        {"DATABASE_PROVIDER": "sqlite", "SQLITE_PATH": str(choice.sqlite_path)},
    )
    embedding = {
        "EMBEDDING_PROVIDER": choice.embedding_provider,
        "EMBEDDING_MODEL": choice.embedding_model,
        "EMBEDDING_DIMS": str(choice.embedding_dims),
        "EMBEDDING_API_KEY": choice.embedding_api_key if not embedder.keyless else "\0",
        embedder.base_url_setting: choice.embedding_base_url or "\0",
    }
    text += _section(
        "Embeddings: turn text into vectors for search. All tools share one memory store and\n"
        "so one embedding space: changing the model later means re-adding your memories.",
        embedding,
    )
    llm_values = {
        "LLM_PROVIDER": choice.llm_provider,
        "LLM_MODEL": choice.llm_model,
        "LLM_API_KEY": choice.llm_api_key or "\0",
    }
    if llm.base_url_setting:
        llm_values[llm.base_url_setting] = choice.llm_base_url or "\0"
    text += _section(
        "Default LLM: serves the requests of tools that registered no LLM of their own\n"
        "(`powermem-gateway register` gives each tool its own).",
        llm_values,
    )
    text += _section(
        "powermem's limit per client (requests per minute). Behind the gateway, powermem\n"
        "sees one client, so the gateway applies this limit per client address instead.\n"
        "Set POWERMEM_SERVER_RATE_LIMIT_ENABLED=false to switch it off.",
        {"POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE": "100"},
    )
    text += _section(
        "powermem's anonymous usage telemetry: off unless you switch it on.",
        {"TELEMETRY_ENABLED": "false"},
    )
    return text.rstrip("\n") + "\n"
