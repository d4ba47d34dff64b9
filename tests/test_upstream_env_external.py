"""External mode as documented: `upstream-env` output every env-file reader agrees on, and the
README's two-process setup started exactly as written."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import InvalidConfig
from gateway.proxy.upstream_env import (
    client_rate_limit,
    read_env_file,
    render_env,
    upstream_environment,
)
from tests.conftest import REPO_ROOT, free_port
from tests.fakes.providers import FakeOpenAI
from tests.powermem_server import EMBEDDING_DIMS, powermem_env
from tests.serving import Serve

ENV_KEY = "sk-external-default-0123456789abcdef"


def docker_env_file(text: str) -> dict[str, str]:
    """The `--env-file` format as Docker documents it: `KEY=VALUE` per line, taken literally
    (no quotes, no escapes, no expansion), `#` lines and blank lines ignored."""
    values = {}
    for line in text.splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key] = value
    return values


def test_docker_and_dotenv_read_upstream_env_alike(tmp_path: Path) -> None:
    """Empty values are `KEY=` (never `''`), and both readers get the same values back."""
    env = {
        "EMPTY": "",
        "LLM_DEFAULT_HEADERS": "",
        "URL": "http://127.0.0.1:8848/relay/v1",
        "SPACED": "a value with spaces",
        "FORMAT": "%(asctime)s - %(message)s",
        "QUOTE_INSIDE": "it's fine",
    }
    text = render_env(env)
    assert "EMPTY=\n" in text and "''" not in text and '""' not in text
    path = tmp_path / "upstream.env"
    path.write_text(text)
    assert docker_env_file(text) == env
    assert read_env_file(path) == env


@pytest.mark.parametrize(
    "value",
    [
        " leading",
        "trailing ",
        "'quoted'",
        '"quoted"',
        "a #comment",
        "${HOME}",
        "back\\slash",
        "a\nb",
    ],
)
def test_values_readers_disagree_about_are_refused_by_name(value: str) -> None:
    """A value docker and dotenv would read differently is an error naming the variable."""
    with pytest.raises(InvalidConfig) as caught:
        render_env({"OCEANBASE_PASSWORD": value})
    assert "OCEANBASE_PASSWORD" in caught.value.message
    assert value not in caught.value.message or value.strip() == ""


def test_help_says_how_to_export_it() -> None:
    """`upstream-env --help` shows the dotenv run / --env-file way to start powermem."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "upstream-env", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    assert "dotenv -f powermem-upstream.env run --" in result.stdout
    assert "opentelemetry-instrument powermem-server" in result.stdout
    assert "--env-file" in result.stdout


def readme_block(heading: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"^```bash\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert match
    return match.group(1)


@pytest.mark.e2e
async def test_readme_two_process_setup_works_as_written(clean_env: Path) -> None:
    """The README's external-mode block, run by bash: both processes up, LLM via the relay."""
    block = readme_block("### Running powermem yourself (two processes)")
    port = free_port()
    async with FakeOpenAI(embedding_dims=EMBEDDING_DIMS) as embedder, FakeOpenAI() as llm:
        env_values = {
            **powermem_env(clean_env, embedder.url),
            "LLM_PROVIDER": "openai",
            "LLM_API_KEY": ENV_KEY,
            "LLM_MODEL": "default-model",
            "OPENAI_LLM_BASE_URL": llm.url,
        }
        env_values.pop("HOME")
        (clean_env / ".powermem").mkdir()
        (clean_env / ".powermem" / ".env").write_text(
            "".join(f"{k}={v}\n" for k, v in env_values.items())
        )
        workdir = clean_env / "work"
        workdir.mkdir()
        log = clean_env.parent / "two-process.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", block],
                cwd=workdir,
                env={
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
                    "HOME": str(clean_env),
                    "POWERMEM_GATEWAY_PORT": str(port),
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        serve = Serve(proc, port, log, clean_env)
        try:
            await serve.wait_for("/gateway/ready", seconds=180)
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    serve.url + "/api/v1/memories",
                    json={"content": "I live in Porto. I like figs.", "user_id": "x"},
                ) as response,
            ):
                assert response.status == 200, await response.text()
            chats = llm.calls_to("/chat/completions")
            assert chats and {c["authorization"] for c in chats} == {f"Bearer {ENV_KEY}"}
            assert {c["json"]["model"] for c in chats} == {"default-model"}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # powermem was started in the background of that shell: same process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("env", "limit"),
    [
        ({}, 100),
        ({"POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE": "30"}, 30),
        (
            {
                "POWERMEM_SERVER_RATE_LIMIT_ENABLED": "false",
                "POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE": "30",
            },
            None,
        ),
        ({"POWERMEM_SERVER_RATE_LIMIT_ENABLED": "enabled"}, 100),
    ],
)
def test_client_rate_limit_is_powermems_own_setting(env: dict[str, str], limit: int | None) -> None:
    """The .env's per-client limit (powermem's default 100/min) is what the gateway applies."""
    assert client_rate_limit(env) == limit


def test_managed_powermem_gets_the_limit_lifted_and_never_openai_base_url() -> None:
    """powermem sees one client behind the gateway; OPENAI_BASE_URL would divert its LLM."""
    env = upstream_environment(
        {"POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE": "30", "OPENAI_BASE_URL": "http://emb/v1"},
        relay_url="http://127.0.0.1:8848/relay/v1",
        relay_token="t",
        data_dir=None,
    )
    assert int(env["POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE"]) >= 1_000_000
    assert "OPENAI_BASE_URL" not in env
    assert env["OPENAI_EMBEDDING_BASE_URL"] == "http://emb/v1"
    assert env["OPENAI_LLM_BASE_URL"] == "http://127.0.0.1:8848/relay/v1"


def test_bad_rate_limit_setting_is_named() -> None:
    """A limit that is not a positive whole number is refused with the variable's name."""
    with pytest.raises(InvalidConfig, match="POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE"):
        client_rate_limit({"POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE": "lots"})
