"""Long work in the CLI shows progress and pages (issue 11.8): `instances list` pages with the
registry's SQL paging, `secret rotate` draws a bar on a terminal and prints a final count,
`secret reset` asks first and says what it did."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE
from gateway.process.datalock import DataDirLock
from gateway.settings import Settings
from tests.conftest import REPO_ROOT

COUNT = 250


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instances_file=tmp_path / "instances.yaml")


def storage(settings: Settings) -> list[str]:
    return ["--data-dir", str(settings.data_dir), "--instances-file", str(settings.instances_file)]


def key_of(n: int) -> str:
    return f"sk-long-work-{n:05d}-abcdefghijkl"


def fill(settings: Settings, count: int = COUNT) -> list[str]:
    """`count` instances straight through the registry (every third one a `cursor` client)."""

    async def go() -> list[str]:
        registry = await Registry.open(settings)
        try:
            ids = []
            for n in range(count):
                config = InstanceConfig.parse(
                    client="cursor" if n % 3 == 0 else "codex",
                    provider="openai" if n % 2 else "deepseek",
                    model=f"model-{n}",
                    api_key=key_of(n),
                )
                record, _ = await registry.resolve(config, privileged=True)
                ids.append(record.instance_id)
            return ids
        finally:
            await registry.close()

    return asyncio.run(go())


def run(settings: Settings, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [*args, *storage(settings)], input=input)


def stored_keys(settings: Settings) -> list[str]:
    """The ciphertexts as the database holds them ('' where a key was dropped)."""
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    try:
        return [k for (k,) in db.execute("SELECT api_key FROM instances")]
    finally:
        db.close()


def next_cursor(stderr: str) -> str | None:
    marker = "--cursor "
    if marker not in stderr:
        return None
    return stderr.split(marker, 1)[1].split()[0]


def test_list_pages_through_every_instance_once(settings: Settings) -> None:
    """Page after page with the printed cursor: each instance exactly once, in order."""
    ids = fill(settings)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["instances", "list", "--limit", "100"] + (["--cursor", cursor] if cursor else [])
        result = run(settings, *args)
        assert result.exit_code == 0, result.output
        rows = result.stdout.splitlines()
        seen += [row.split()[0] for row in rows]
        pages += 1
        cursor = next_cursor(result.stderr)
        if cursor is None:
            break
        assert f"-- {len(rows)} of {COUNT}; next page" in result.stderr
    assert pages == 3 and len(rows) == 50
    assert seen == ids  # creation order, no repeat, no gap
    assert not any(key_of(n) in " ".join(seen) for n in range(3))


def test_list_all_json_and_filters(settings: Settings) -> None:
    """--all streams every page; --json is one array; filters count and page by SQL."""
    ids = fill(settings)
    everything = run(settings, "instances", "list", "--all", "--limit", "7")
    assert everything.exit_code == 0 and everything.stderr == ""
    assert len(everything.stdout.splitlines()) == COUNT
    listed = json.loads(run(settings, "instances", "list", "--all", "--json").stdout)
    assert [row["instance_id"] for row in listed] == ids
    assert all(row["api_key"].startswith("sk-l…") for row in listed)
    page = run(settings, "instances", "list", "--client", "cursor", "--provider", "openai")
    expected = [i for n, i in enumerate(ids) if n % 3 == 0 and n % 2]
    assert [row.split()[0] for row in page.stdout.splitlines()] == expected
    assert page.stderr == ""  # one page holds them all


def test_a_cursor_that_was_never_given_out_is_a_clear_error(settings: Settings) -> None:
    """A made-up cursor exits 1 with a sentence, not a traceback."""
    fill(settings, 3)
    result = run(settings, "instances", "list", "--cursor", "not-a-cursor")
    assert result.exit_code == 1
    assert "cursor is not one this gateway gave out" in result.output
    assert "Traceback" not in result.output


def on_terminal(settings: Settings, *args: str, answer: bytes = b"") -> tuple[int, str]:
    """Run `python -m gateway ARGS` on a pseudo-terminal, typing `answer` at its first
    prompt; (exit status, everything it wrote)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args, *storage(settings)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=REPO_ROOT,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break  # the child closed the terminal
            if not chunk:
                break
            output += chunk
            if answer and b"[y/N]" in output:
                os.write(controller, answer)
                answer = b""
        elif proc.poll() is not None:
            break
    os.close(controller)
    return proc.wait(timeout=10), output.decode()


def test_rotate_on_a_terminal_draws_a_bar_and_ends_with_the_count(settings: Settings) -> None:
    """Run as a real process on a pseudo-terminal: the bar is redrawn per batch, then a count."""
    fill(settings)
    status, text = on_terminal(settings, "secret", "rotate")
    assert status == 0, text
    assert "re-encrypting stored keys" in text
    assert f"100/{COUNT}" in text and f"200/{COUNT}" in text and f"{COUNT}/{COUNT}" in text
    assert "\r" in text
    assert f"{COUNT} stored key(s) re-encrypted" in text


@pytest.mark.parametrize(("answer", "dropped"), [(b"n\n", False), (b"y\n", True)])
def test_reset_on_a_terminal_asks_first(settings: Settings, answer: bytes, dropped: bool) -> None:
    """The question names what is lost; 'n' changes nothing, 'y' drops the keys."""
    fill(settings, 3)
    status, text = on_terminal(settings, "secret", "reset", answer=answer)
    assert "Drop every stored API key" in text
    assert (status == 0) is dropped and ("Dropped 3 stored key(s)" in text) is dropped
    assert (set(stored_keys(settings)) == {""}) is dropped


def test_rotate_off_a_terminal_prints_only_the_count(settings: Settings) -> None:
    """In a script or a log there is no bar to redraw: one line with the count."""
    fill(settings, 5)
    result = run(settings, "secret", "rotate")
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "re-encrypting" not in result.output
    assert "5 stored key(s) re-encrypted" in result.output


def test_reset_off_a_terminal_needs_yes(settings: Settings) -> None:
    """No terminal to ask on and no --yes: refused, nothing dropped."""
    fill(settings, 3)
    result = run(settings, "secret", "reset")
    assert result.exit_code == 1 and "--yes" in result.output
    assert "nothing was changed" in result.output
    assert all(stored_keys(settings))


def test_reset_says_what_it_dropped_and_instances_keep_their_ids(settings: Settings) -> None:
    """--yes: every stored key is dropped, counted; the ids stay; a rerun drops none."""
    ids = fill(settings, 4)
    (settings.data_dir / "master.key").unlink()  # lost for good
    result = run(settings, "secret", "reset", "--yes")
    assert result.exit_code == 0, result.output
    assert "Dropped 4 stored key(s)" in result.output and "keeps its id" in result.output
    listed = json.loads(run(settings, "instances", "list", "--json").stdout)
    assert [row["instance_id"] for row in listed] == ids
    assert set(stored_keys(settings)) == {""}
    again = run(settings, "secret", "reset", "--yes")
    assert "Dropped 0 stored key(s)" in again.output


def test_reset_refuses_while_a_gateway_runs_on_the_data_dir(settings: Settings) -> None:
    """A running gateway holds the old key in memory: reset waits until it is stopped."""
    fill(settings, 2)
    with DataDirLock(settings.data_dir):
        result = run(settings, "secret", "reset", "--yes")
    assert result.exit_code == 1
    assert "stop it before secret reset" in result.output
    assert all(stored_keys(settings))
