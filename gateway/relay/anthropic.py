"""The Anthropic Messages API seen through OpenAI Chat Completions: the public surface.

Pure translation, no HTTP: the relay calls `to_anthropic_request` on the way out, then
`from_anthropic_response` (or a `StreamTranslator` per streamed call, or `from_anthropic_error`
with `openai_error`) on the way back. The work lives in three private-ish modules, one per
direction, so each stays small.
"""

from __future__ import annotations

from gateway.relay.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    json_mode_requested,
    stream_usage_requested,
    to_anthropic_request,
)
from gateway.relay.anthropic_response import (
    Usage,
    from_anthropic_error,
    from_anthropic_response,
    openai_error,
    strip_json_fences,
)
from gateway.relay.anthropic_stream import DONE, StreamTranslator

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DONE",
    "StreamTranslator",
    "Usage",
    "from_anthropic_error",
    "from_anthropic_response",
    "json_mode_requested",
    "openai_error",
    "stream_usage_requested",
    "strip_json_fences",
    "to_anthropic_request",
]
