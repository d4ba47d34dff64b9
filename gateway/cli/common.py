"""What every command shares: its settings (built in one place) and error reporting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from gateway.errors import GatewayError
from gateway.settings import ENV_PREFIX, Settings, SettingsFileError

__all__ = ["load_settings", "run", "storage_options"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def storage_options(fn: F) -> F:
    """Where the gateway keeps its data (shared by several commands)."""
    for option in reversed(
        [
            click.option(
                "--data-dir",
                help="Registry, keys and logs (POWERMEM_GATEWAY_DATA_DIR). "
                "[default: ~/.powermem/gateway]",
            ),
            click.option(
                "--instances-file",
                help="Human-managed instances (POWERMEM_GATEWAY_INSTANCES_FILE). "
                "[default: ~/.powermem/instances.yaml]",
            ),
            click.option(
                "--env-file",
                help="powermem's own settings (POWERMEM_ENV_FILE). [default: ~/.powermem/.env]",
            ),
            click.option(
                "--database-url",
                help="Keep the registry in PostgreSQL, shared by several replicas "
                "(POWERMEM_GATEWAY_DATABASE_URL, or _FILE). [default: SQLite in the data dir]",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _variable(field: str) -> str:
    return "POWERMEM_ENV_FILE" if field == "env_file" else f"{ENV_PREFIX}{field.upper()}"


def load_settings(**flags: Any) -> Settings:
    """Settings from flags (None and empty tuples mean "not given") over the environment."""
    values = {k: v for k, v in flags.items() if v is not None and v != ()}
    try:
        return Settings(**values)
    except SettingsFileError as exc:
        raise click.ClickException(str(exc)) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            source = f"--{field.replace('_', '-')}" if field in values else _variable(field)
            problems.append(f"{source}: {error['msg']}")
        raise click.ClickException("; ".join(problems)) from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
