"""The README's first command, run literally in a fresh HOME, ends in a working memory add.

Only the environment differs from a new user's machine: the key and base URL `init` reads
(`OPENAI_API_KEY`, `OPENAI_BASE_URL`) point at a local fake OpenAI, and the port is a free one
(`POWERMEM_GATEWAY_PORT`), since 8848 may be taken on a shared machine.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.fakes.providers import FakeOpenAI
from tests.serving import Serve

pytestmark = pytest.mark.e2e

KEY = "sk-first-run-0123456789abcdef"


def readme_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_starts_with_the_install_and_the_test_command() -> None:
    """The two first blocks are one command each; the second is what .ci/run runs."""
    first, second = (block.strip() for block in readme_blocks()[:2])
    assert first == "pip install -e '.[managed]' && powermem-gateway init && powermem-gateway serve"
    assert second == "pip install -e '.[managed,test]' && scripts/check"
    assert second in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")


async def test_first_block_verbatim_reaches_a_memory_add(clean_env: Path) -> None:
    """install → init → serve, then a memory add whose LLM and embedder calls hit the fake."""
    block = readme_blocks()[0]
    port = free_port()
    log = clean_env.parent / "first-run.log"
    async with FakeOpenAI(embedding_dims=1536) as fake:
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "HOME": str(clean_env),
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": fake.url,
            "POWERMEM_GATEWAY_PORT": str(port),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", block],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        serve = Serve(proc, port, log, clean_env)
        try:
            await serve.wait_for("/gateway/ready", seconds=240)
            env_file = clean_env / ".powermem" / ".env"
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
            assert f"Wrote {env_file}" in serve.output()
            assert KEY not in serve.output()  # init shows the key masked
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    serve.url + "/api/v1/memories",
                    json={"content": "I live in Lisbon. My cat is called Miso.", "user_id": "u"},
                ) as response,
            ):
                body = await response.json()
                assert response.status == 200, body
            assert {m["content"] for m in body["data"]} == {
                "I live in Lisbon",
                "My cat is called Miso",
            }
            chats = fake.calls_to("/chat/completions")
            assert chats and {c["authorization"] for c in chats} == {f"Bearer {KEY}"}
            assert {c["json"]["model"] for c in chats} == {"gpt-4o-mini"}
            embeddings = fake.calls_to("/embeddings")
            assert embeddings and {c["json"]["model"] for c in embeddings} == {
                "text-embedding-3-small"
            }
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
