"""The `powermem-gateway` command: the entry point, which may import every part of the gateway.

Each command builds its settings with `gateway.cli.common.load_settings` (flags over
`POWERMEM_GATEWAY_*` variables and their `_FILE` variants), so an option means the same thing
in every command.
"""

from __future__ import annotations

import click

from gateway.cli.init import init
from gateway.cli.instances import instances
from gateway.cli.secret import secret
from gateway.cli.serve import serve
from gateway.cli.upstream_env import upstream_env
from gateway.clients.cli import register, unregister
from gateway.clients.doctorcli import doctor

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="powermem-gateway")
def cli() -> None:
    """Many AI coding tools, one powermem server, each with its own LLM."""


for command in (init, serve, instances, secret, upstream_env, register, unregister, doctor):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="powermem-gateway")
