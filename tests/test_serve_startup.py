"""`serve` as a careless operator starts it: taken port, second gateway, open listener, no .env.

Each is a real `python -m gateway serve` process in a fresh HOME; each refusal is one clear
message that names the cause and the fix, and nothing was started behind it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from aiohttp.test_utils import TestServer

from tests.serving import start_serve

UPSTREAM_ARGS = ("--workers", "1")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a listen address under test


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


async def test_taken_port_is_one_line_naming_the_holder(clean_env: Path) -> None:
    """A port held by another process: one line with its pid, its command and what to do."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen();"
            "print(s.getsockname()[1], flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        serve = start_serve(clean_env, "--upstream", "http://127.0.0.1:9", port=port)
        assert serve.proc.wait(timeout=30) == 1
        line = _error_line(serve.output())
        assert f"Port {port} on 127.0.0.1 is already in use by pid {holder.pid}" in line
        assert "python" in line and "--port" in line
        assert "Traceback" not in serve.output()
        # Nothing was started in the data dir.
        assert not (clean_env / ".powermem" / "gateway" / "upstream.pid").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


async def test_second_gateway_on_one_data_dir_is_refused(
    clean_env: Path, upstream: TestServer
) -> None:
    """A second `serve` on the same data dir (another port) names the first one's pid."""
    url = str(upstream.make_url("")).rstrip("/")
    first = start_serve(clean_env, "--upstream", url, *UPSTREAM_ARGS)
    try:
        await first.wait_for("/gateway/health")
        second = start_serve(clean_env, "--upstream", url, *UPSTREAM_ARGS)
        assert second.proc.wait(timeout=30) == 1
        line = _error_line(second.output())
        assert f"Another gateway (pid {first.proc.pid}) is already using the data dir" in line
        assert "--data-dir" in line
        # The first one is untouched.
        await first.wait_for("/gateway/health")
    finally:
        first.stop()


async def test_listening_beyond_loopback_needs_an_explicit_admin_token(clean_env: Path) -> None:
    """0.0.0.0 without POWERMEM_GATEWAY_ADMIN_TOKEN: refused before anything listens."""
    serve = start_serve(clean_env, "--host", ALL_INTERFACES, "--upstream", "http://127.0.0.1:9")
    assert serve.proc.wait(timeout=30) == 1
    line = _error_line(serve.output())
    assert "Refusing to listen on 0.0.0.0 without an admin token" in line
    assert "POWERMEM_GATEWAY_ADMIN_TOKEN" in line
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", serve.port)) != 0


async def test_admin_token_from_a_file_opens_the_wide_listener(
    clean_env: Path, upstream: TestServer
) -> None:
    """POWERMEM_GATEWAY_ADMIN_TOKEN_FILE counts as an explicit token (compose secrets)."""
    token_file = clean_env / "admin-token"
    token_file.write_text("a-long-admin-token-from-a-secret-file\n")
    serve = start_serve(
        clean_env,
        "--host",
        ALL_INTERFACES,
        "--upstream",
        str(upstream.make_url("")).rstrip("/"),
        *UPSTREAM_ARGS,
        env={"POWERMEM_GATEWAY_ADMIN_TOKEN_FILE": str(token_file)},
    )
    try:
        await serve.wait_for("/gateway/health")
    finally:
        serve.stop()


async def test_a_misspelt_gateway_variable_is_named_not_silently_ignored(
    clean_env: Path, upstream: TestServer
) -> None:
    """POWERMEM_GATEWAY_ADMIN_TOKN (a typo): serve starts, and says the name is no setting."""
    serve = start_serve(
        clean_env,
        "--upstream",
        str(upstream.make_url("")).rstrip("/"),
        *UPSTREAM_ARGS,
        env={"POWERMEM_GATEWAY_ADMIN_TOKN": "a-long-admin-token-misspelt-0123"},
    )
    try:
        await serve.wait_for("/gateway/health")
    finally:
        serve.stop()
    output = serve.output()
    assert "POWERMEM_GATEWAY_ADMIN_TOKN is not a setting of this gateway" in output
    assert "a-long-admin-token-misspelt-0123" not in output


async def test_no_env_file_says_what_is_missing_and_how_to_fix_it(clean_env: Path) -> None:
    """Managed mode without ~/.powermem/.env: exit 1 naming the file and `init`."""
    serve = start_serve(clean_env)
    assert serve.proc.wait(timeout=30) == 1
    output = serve.output()
    assert f"{clean_env}/.powermem/.env does not exist" in output
    assert "powermem-gateway init" in output
    assert "Traceback" not in output
    assert not (clean_env / ".powermem" / "gateway" / "upstream.pid").exists()


async def test_env_without_storage_names_the_setting(clean_env: Path) -> None:
    """A .env with no DATABASE_PROVIDER: the missing package and the setting to add."""
    env_file = clean_env / ".powermem" / ".env"
    env_file.parent.mkdir()
    env_file.write_text("LLM_PROVIDER=openai\nLLM_API_KEY=sk-x\n")
    serve = start_serve(clean_env)
    assert serve.proc.wait(timeout=30) == 1
    output = serve.output()
    assert "DATABASE_PROVIDER is not set" in output and "DATABASE_PROVIDER=sqlite" in output
    assert "EMBEDDING_PROVIDER is not set" in output


async def test_bad_setting_names_the_variable(clean_env: Path) -> None:
    """A malformed POWERMEM_GATEWAY_* value is reported by its variable name."""
    serve = start_serve(
        clean_env, "--upstream", "http://127.0.0.1:9", env={"POWERMEM_GATEWAY_WORKERS": "lots"}
    )
    assert serve.proc.wait(timeout=30) != 0
    assert "POWERMEM_GATEWAY_WORKERS" in _error_line(serve.output())
