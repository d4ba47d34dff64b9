"""What a cooperative LLM would answer to each prompt powermem sends.

powermem parses its LLM answers (facts JSON, memory-action JSON, profile JSON, scores…), so a
fake that answered "OK" would make every intelligent pipeline silently store nothing. This
module recognises powermem 1.1.7's prompts by their fixed wording and answers each in the shape
its parser expects, deterministically, from the text of the conversation itself.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

__all__ = ["content_text", "prompt_kind", "reply_for"]


def content_text(content: Any) -> str:
    """Flatten an OpenAI or Anthropic message `content` (string or list of parts) to text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return "" if content is None else str(content)


def _all_text(messages: list[dict[str, Any]], system: str = "") -> str:
    return "\n".join([system, *(content_text(m.get("content")) for m in messages)])


def prompt_kind(messages: list[dict[str, Any]], system: str = "") -> str:
    """Which powermem prompt this is: facts, memory_update, profile, topics, scope, importance,
    query_rewrite, or chat for anything else."""
    text = _all_text(messages, system)
    if "Personal Information Organizer" in text or '{"facts"' in text:
        return "facts"
    if "New facts:" in text and '"memory"' in text:
        return "memory_update"
    if "user profile topic extraction specialist" in text:
        return "topics"
    if "user profile extraction specialist" in text:
        return "profile"
    if "suggested_scope" in text:
        return "scope"
    if "importance" in text and ("0.0 to 1.0" in text or "importance_score" in text):
        return "importance"
    if "Rewrite the query" in text:
        return "query_rewrite"
    return "chat"


def _conversation(text: str) -> str:
    """The part of a prompt after its last `Input:` / `[Conversation]:` marker."""
    for marker in ("[Conversation]:", "Input:"):
        if marker in text:
            return text.rsplit(marker, 1)[1]
    return text


def _facts(text: str) -> list[str]:
    lines: list[str] = []
    for raw in _conversation(text).splitlines():
        line = re.sub(r"^(user|assistant)\s*:\s*", "", raw.strip(), flags=re.IGNORECASE)
        lines.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if s.strip())
    return [s.rstrip(".") for s in lines if len(s) > 3 and s.lower() not in ("hi", "hello")]


def _block_after(text: str, heading: str) -> str:
    match = re.search(re.escape(heading) + r"\s*```\s*\n(.*?)\n```", text, flags=re.DOTALL)
    return match.group(1) if match else ""


def _memory_update(text: str) -> dict[str, Any]:
    # powermem renders current memory with Python's repr: [{'id': '0', 'text': '…'}].
    current: list[dict[str, Any]] = []
    if block := _block_after(text, "Current memory:"):
        try:
            parsed = ast.literal_eval(block.strip())
            current = [m for m in parsed if isinstance(m, dict)]
        except (ValueError, SyntaxError):
            current = []
    known = {str(m.get("text", "")).strip().lower(): str(m.get("id")) for m in current}
    facts = [
        line[2:].strip()
        for line in _block_after(text, "New facts:").splitlines()
        if line.startswith("- ")
    ]
    events: list[dict[str, Any]] = [
        {"id": mid, "text": txt, "event": "NONE"} for txt, mid in known.items()
    ]
    next_id = len(current)
    for fact in facts:
        if fact.lower() in known:
            continue
        events.append({"id": str(next_id), "text": fact, "event": "ADD"})
        next_id += 1
    return {"memory": events}


def reply_for(messages: list[dict[str, Any]], system: str = "") -> str:
    """The assistant text a cooperative LLM would return for these messages."""
    text = _all_text(messages, system)
    kind = prompt_kind(messages, system)
    if kind == "facts":
        return json.dumps({"facts": _facts(text)})
    if kind == "memory_update":
        return json.dumps(_memory_update(text))
    if kind == "profile":
        facts = _facts(text)
        if not facts:
            return json.dumps({"changed": False})
        return json.dumps({"changed": True, "profile": ". ".join(facts)[:1000]})
    if kind == "topics":
        facts = _facts(text)
        return json.dumps({"notes": {f"fact_{i}": f for i, f in enumerate(facts)}} if facts else {})
    if kind == "scope":
        return json.dumps(
            {"suggested_scope": "PRIVATE", "confidence": 0.9, "reasoning": "personal"}
        )
    if kind == "importance":
        return json.dumps({"importance_score": 0.6, "reasoning": "moderately useful"})
    if kind == "query_rewrite":
        return text.rsplit("# Query", 1)[1].strip() if "# Query" in text else ""
    last = content_text(messages[-1].get("content")) if messages else ""
    return f"fake reply to: {last[:200]}"
