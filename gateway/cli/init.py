"""`powermem-gateway init`: write a minimal, commented `~/.powermem/.env` that works.

It never overwrites a file: with one in place it says so and succeeds, so
`powermem-gateway init && powermem-gateway serve` can be run again and again. A key is never
a command-line argument: it comes from a variable (the provider's usual one, or
`--api-key-env VAR`), from stdin (`--api-key-stdin`), or from a hidden prompt on a terminal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import load_settings
from gateway.errors import InvalidConfig
from gateway.files import write_private_file_once
from gateway.instances.model import mask_key
from gateway.proxy.envfile import EMBEDDERS, LLMS, InitChoice, render_init_env

__all__ = ["init"]


def _interactive() -> bool:
    return sys.stdin.isatty()


def _ask(value: str | None, question: str, default: str) -> str:
    if value is not None:
        return value
    if _interactive():
        return str(click.prompt(question, default=default, show_default=bool(default)))
    return default


def _key(
    provider: str, variable: str | None, from_stdin: bool, fallback: str, what: str
) -> tuple[str, str]:
    """(key, where it came from) for `provider`; '' for keyless providers."""
    conventional = LLMS[provider].key_variable if provider in LLMS else ""
    if variable:
        value = os.environ.get(variable, "").strip()
        if not value:
            raise click.ClickException(f"--{what}api-key-env {variable}: that variable is not set.")
        return value, variable
    if from_stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise click.ClickException(f"--{what}api-key-stdin: no key on the first line of stdin.")
        return value, "stdin"
    if fallback:
        return fallback, "the LLM key"
    if conventional and (value := os.environ.get(conventional, "").strip()):
        return value, conventional
    if not conventional and provider in LLMS:
        return "", "none (keyless)"
    if _interactive():
        value = click.prompt(f"{provider} API key", hide_input=True, default="", show_default=False)
        if value.strip():
            return value.strip(), "prompt"
    hint = f"set {conventional}, or " if conventional else ""
    raise click.ClickException(
        f"No API key for {provider}: {hint}pass --{what}api-key-env VAR (a variable holding it) "
        f"or --{what}api-key-stdin. It is written to the .env (mode 0600), never shown."
    )


@click.command()
@click.option("--env-file", help="Where to write. [default: ~/.powermem/.env]")
@click.option(
    "--llm-provider", type=click.Choice(sorted(LLMS)), help="Default LLM. [default: openai]"
)
@click.option("--llm-model", help="[default: the provider's usual small model]")
@click.option("--llm-base-url", help="Only for a non-default endpoint.")
@click.option("--api-key-env", metavar="VAR", help="Read the LLM key from this variable.")
@click.option("--api-key-stdin", is_flag=True, help="Read the LLM key from stdin's first line.")
@click.option(
    "--embedding-provider",
    type=click.Choice(sorted(EMBEDDERS)),
    help="Embedder. [default: the LLM provider's when it has one, else openai]",
)
@click.option("--embedding-model", help="[default: the provider's usual model]")
@click.option("--embedding-dims", type=click.IntRange(1, 65536), help="Vector size.")
@click.option("--embedding-base-url", help="Only for a non-default endpoint.")
@click.option(
    "--embedding-api-key-env",
    metavar="VAR",
    help="Read the embedder's key from this variable. [default: the LLM key, same provider]",
)
@click.option("--sqlite-path", help="The memory database. [default: ~/.powermem/powermem.db]")
def init(**flags: Any) -> None:
    """Write a minimal ~/.powermem/.env: SQLite storage, an embedder, a default LLM.

    On a terminal it asks what it is not told; elsewhere it uses the defaults (OpenAI:
    gpt-4o-mini and text-embedding-3-small, the key from OPENAI_API_KEY, the base URL from
    OPENAI_BASE_URL when set). An existing file is never overwritten.
    """
    settings = load_settings(env_file=flags["env_file"])
    path = settings.env_file
    if path.exists():
        click.echo(f"{path} already exists; left as it is (edit it, or remove it to start over).")
        return
    provider = _ask(flags["llm_provider"], "LLM provider", "openai").strip().lower()
    if provider not in LLMS:
        raise click.ClickException(f"LLM provider {provider!r}: use one of {', '.join(LLMS)}.")
    spec = LLMS[provider]
    model = _ask(flags["llm_model"], "LLM model", spec.model).strip()
    if not model:
        raise click.ClickException(f"No model for {provider}: pass --llm-model.")
    llm_key, llm_key_from = _key(
        provider, flags["api_key_env"], flags["api_key_stdin"], "", what=""
    )
    env_url = os.environ.get(spec.base_url_variable, "").strip() if spec.base_url_variable else ""
    llm_url = flags["llm_base_url"] if flags["llm_base_url"] is not None else env_url
    default_embedder = provider if provider in EMBEDDERS else "openai"
    embedder_name = _ask(flags["embedding_provider"], "Embedding provider", default_embedder)
    if embedder_name not in EMBEDDERS:
        raise click.ClickException(
            f"Embedding provider {embedder_name!r}: use one of {', '.join(EMBEDDERS)}."
        )
    embedder = EMBEDDERS[embedder_name]
    embedding_model = _ask(flags["embedding_model"], "Embedding model", embedder.model)
    dims = flags["embedding_dims"] or embedder.dims
    same = embedder_name == provider
    embedding_key, embedding_key_from = (
        ("", "none (keyless)")
        if embedder.keyless
        else _key(
            embedder_name,
            flags["embedding_api_key_env"],
            False,
            llm_key if same and not flags["embedding_api_key_env"] else "",
            what="embedding-",
        )
    )
    embedding_url = flags["embedding_base_url"]
    if embedding_url is None:
        embedding_url = llm_url if same else ""
    sqlite = Path(flags["sqlite_path"] or path.parent / "powermem.db").expanduser().absolute()
    choice = InitChoice(
        llm_provider=provider,
        llm_model=model,
        llm_api_key=llm_key,
        llm_base_url=llm_url,
        embedding_provider=embedder_name,
        embedding_model=embedding_model,
        embedding_dims=dims,
        embedding_api_key=embedding_key,
        embedding_base_url=embedding_url,
        sqlite_path=sqlite,
    )
    try:
        text = render_init_env(choice)
    except InvalidConfig as exc:
        raise click.ClickException(exc.message) from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if write_private_file_once(path, text) != text:
        click.echo(f"{path} appeared meanwhile; left as it is.")
        return
    click.echo(f"Wrote {path} (mode 0600):")
    click.echo(f"  storage    SQLite at {sqlite}")
    click.echo(
        f"  embedder   {embedder_name} / {embedding_model} ({dims} dims), key "
        f"{mask_key(embedding_key) or '-'} from {embedding_key_from}"
        + (f", base URL {embedding_url}" if embedding_url else "")
    )
    click.echo(
        f"  LLM        {provider} / {model}, key {mask_key(llm_key) or '-'} from {llm_key_from}"
        + (f", base URL {llm_url}" if llm_url else "")
    )
    click.echo("Next: powermem-gateway serve")
