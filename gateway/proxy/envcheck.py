"""What in powermem's `.env` keeps its memory service from working, found before starting it.

`serve` refuses to start on a fatal problem and says what to change; `doctor` reports the
same causes. Only what can be known without running powermem is checked here; whether its
memory service really works is `/gateway/ready`'s question.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EnvProblem", "env_problems"]


@dataclass(frozen=True)
class EnvProblem:
    """Something in powermem's `.env` that keeps its memory service from working."""

    problem: str
    fix: str
    fatal: bool = True


_INIT_FIX = "run `powermem-gateway init` (it writes a working SQLite setup), or edit that file"


def env_problems(path: Path, env: Mapping[str, str]) -> list[EnvProblem]:
    """What is missing from powermem's `.env` at `path` (read as `env`), each with its fix.

    Only what can be known without starting powermem: a missing file, and defaults that
    cannot work here (powermem's default storage and embedder need `pyseekdb`, and its
    default embedder downloads a model on first use).
    """
    if not path.is_file():
        return [
            EnvProblem(
                f"{path} does not exist: powermem's storage, embedder and default LLM are "
                "configured there",
                "run `powermem-gateway init`, or pass --env-file FILE (POWERMEM_ENV_FILE)",
            )
        ]
    seekdb = importlib.util.find_spec("pyseekdb") is not None
    problems = []
    database = env.get("DATABASE_PROVIDER", "").strip().lower()
    if not database and not seekdb:
        problems.append(
            EnvProblem(
                f"DATABASE_PROVIDER is not set in {path}, and powermem's default storage "
                "(embedded seekdb) needs the pyseekdb package, which is not installed",
                "set DATABASE_PROVIDER=sqlite and SQLITE_PATH=<file> there; " + _INIT_FIX,
            )
        )
    embedder = env.get("EMBEDDING_PROVIDER", "").strip().lower()
    if embedder in ("", "default"):
        problems.append(
            EnvProblem(
                f"EMBEDDING_PROVIDER is not set in {path}: powermem's default embedder "
                + (
                    "needs the pyseekdb package, which is not installed"
                    if not seekdb
                    else "downloads a model from the internet on first use"
                ),
                "set EMBEDDING_PROVIDER, EMBEDDING_MODEL, EMBEDDING_DIMS and its key there "
                "(e.g. openai, qwen, ollama); " + _INIT_FIX,
                fatal=not seekdb,
            )
        )
    return problems
