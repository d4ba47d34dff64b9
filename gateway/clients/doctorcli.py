"""`powermem-gateway doctor`: the whole chain checked against a running gateway."""

from __future__ import annotations

import os
from pathlib import Path

import click

from gateway.clients.cli import api_for, gateway_option, run_client
from gateway.clients.doctor import Verdict, as_json, render
from gateway.clients.doctorrun import run_doctor
from gateway.settings import default_env_file

__all__ = ["doctor"]


@click.command()
@gateway_option
@click.option(
    "--probe-providers",
    is_flag=True,
    help="Ask the gateway for a one-token call to each registered tool's provider (admin).",
)
@click.option("--json", "as_json_output", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--data-dir",
    help="The gateway's data dir, where a gateway closed by default keeps admin.token "
    "(POWERMEM_GATEWAY_DATA_DIR). [default: ~/.powermem/gateway]",
)
@click.option(
    "--env-file",
    envvar="POWERMEM_ENV_FILE",
    help="powermem's .env, read to explain a managed powermem that does not work. "
    "[default: ~/.powermem/.env]",
)
def doctor(
    gateway: str | None,
    probe_providers: bool,
    as_json_output: bool,
    data_dir: str | None,
    env_file: str | None,
) -> None:
    """Check the chain: gateway, powermem, relay wiring, each tool's knob, providers.

    Each problem comes with its cause and the fix; exit status 1 when something is broken.
    The admin token (POWERMEM_GATEWAY_ADMIN_TOKEN, …_FILE, or the data dir's admin.token)
    opens the wiring probe and the per-instance checks.
    """
    api = api_for(gateway, data_dir)
    env_path = Path(env_file).expanduser() if env_file else default_env_file()

    async def action() -> list[Verdict]:
        async with api:
            return await run_doctor(
                api,
                home=Path.home(),
                environ=os.environ,
                env_file=env_path,
                probe_providers=probe_providers,
            )

    verdicts = run_client(action())
    if as_json_output:
        click.echo(as_json(api.url, verdicts))
    else:
        click.echo(f"powermem-gateway doctor: {api.url}")
        click.echo(render(verdicts))
    if any(v.state == "fail" for v in verdicts):
        click.get_current_context().exit(1)
