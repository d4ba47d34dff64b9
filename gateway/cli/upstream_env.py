"""`powermem-gateway upstream-env`: the environment an external powermem server needs."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.common import load_settings, storage_options
from gateway.errors import InvalidConfig
from gateway.proxy.upstream_env import read_env_file, render_env, upstream_environment
from gateway.tokens import load_relay_token

__all__ = ["upstream_env"]


@click.command("upstream-env")
@storage_options
@click.option(
    "--relay-url",
    help="Where that powermem server reaches this gateway's relay. "
    "[default: http://127.0.0.1:8848/relay/v1]",
)
def upstream_env(relay_url: str | None, **values: Any) -> None:
    """Print the environment an external powermem server needs to use the relay.

    It holds the relay token, the OpenTelemetry settings that carry each request's baggage
    onto powermem's LLM calls, and the storage and embedder settings of your .env, as
    KEY=value lines that env-file readers (docker/podman --env-file, compose env_file,
    systemd EnvironmentFile, python-dotenv) read the same way. These variables must be in
    powermem's process environment, not in a .env it reads itself (opentelemetry-instrument
    reads them before powermem starts), so export them when you start it:

    \b
      powermem-gateway upstream-env > powermem-upstream.env
      dotenv -f powermem-upstream.env run -- \\
          opentelemetry-instrument powermem-server --host 127.0.0.1 --port 8000
      powermem-gateway serve --upstream http://127.0.0.1:8000

    (or: docker run --env-file powermem-upstream.env …). The file holds secrets: keep it
    private (chmod 600).
    """
    settings = load_settings(**values)
    env = upstream_environment(
        read_env_file(settings.env_file),
        relay_url=relay_url or settings.relay_url,
        relay_token=load_relay_token(settings),
        data_dir=None,
    )
    try:
        click.echo(render_env(env), nl=False)
    except InvalidConfig as exc:
        raise click.ClickException(exc.message) from None
