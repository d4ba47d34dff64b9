"""A lost master key is never papered over, and stored keys of older releases are upgraded.

Issue 9.6: a deleted `master.key` with stored keys left used to be replaced silently by a new
one, losing every key without a word. Now the start is refused with the two ways out:
restore the file, or `secret reset`, which drops the stored keys knowingly.
Issue 9.1: keys stored by the previous release (`v1.`, bound to the instance id only) are
re-sealed as `v2.` when a registry opens, and only `v2.` is ever used on a request.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import MasterKeyMissing, StoredKeyRejected, StoredKeyUnavailable
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.reset import reset_stored_keys
from gateway.instances.sqlite_store import DB_FILE
from gateway.observe.audit import AUDIT_FILE
from gateway.settings import Settings
from tests.conftest import REPO_ROOT
from tests.keyformats import key_file_material, v1_ciphertext

KEYS = [f"sk-test-lost-{n}-0123456789abcdef" for n in range(2)]
CONFIGS = [
    InstanceConfig.parse(provider="openai", model=f"m{n}", api_key=k) for n, k in enumerate(KEYS)
]
KEYLESS = InstanceConfig.parse(provider="ollama", model="llama3")


async def register_all(settings: Settings) -> list[str]:
    registry = await Registry.open(settings)
    try:
        return [(await registry.resolve(c))[0].instance_id for c in (*CONFIGS, KEYLESS)]
    finally:
        await registry.close()


def stored(settings: Settings) -> dict[str, str]:
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    try:
        return dict(db.execute("SELECT instance_id, api_key FROM instances"))
    finally:
        db.close()


async def test_a_deleted_master_key_refuses_the_start_and_makes_no_new_one(
    make_settings: Callable[..., Settings],
) -> None:
    """Registry.open says what is missing and both ways out; no key file appears."""
    settings = make_settings()
    await register_all(settings)
    (settings.data_dir / "master.key").unlink()
    with pytest.raises(MasterKeyMissing) as caught:
        await Registry.open(settings)
    message = caught.value.message
    assert "Restore master.key" in message and "secret reset" in message
    assert "3 stored API key(s)" in message
    assert caught.value.status == 503
    assert not (settings.data_dir / "master.key").exists()
    if Path("/proc/self/fd").is_dir():  # the refused start keeps nothing of the data dir open
        held = [
            os.readlink(f"/proc/self/fd/{fd}")
            for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")
        ]
        assert not [f for f in held if f.startswith(str(settings.data_dir))]


async def test_serve_without_its_master_key_stops_with_one_clear_line(
    make_settings: Callable[..., Settings],
) -> None:
    """`powermem-gateway serve` on such a data dir exits at once with the way out, no traceback."""
    settings = make_settings()
    await register_all(settings)
    (settings.data_dir / "master.key").unlink()
    result = subprocess.run(  # noqa: ASYNC221 - a short-lived child, waited for on purpose
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            "0",
            "--upstream",
            "http://127.0.0.1:9",
            "--data-dir",
            str(settings.data_dir),
            "--instances-file",
            str(settings.instances_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "secret reset" in output and "master.key" in output
    assert "Traceback" not in output
    assert not (settings.data_dir / "master.key").exists()


async def test_restoring_the_key_file_brings_every_key_back(
    make_settings: Callable[..., Settings],
) -> None:
    """The first way out: put the backup of master.key back, and everything reads again."""
    settings = make_settings()
    ids = await register_all(settings)
    backup = settings.data_dir.parent / "master.key.backup"
    shutil.copy(settings.data_dir / "master.key", backup)
    (settings.data_dir / "master.key").unlink()
    with pytest.raises(MasterKeyMissing):
        await Registry.open(settings)
    shutil.copy(backup, settings.data_dir / "master.key")
    registry = await Registry.open(settings)
    try:
        assert [registry.api_key(await registry.get(i)) for i in ids] == [*KEYS, ""]
    finally:
        await registry.close()


async def test_secret_reset_drops_the_keys_and_clients_bring_them_back(
    make_settings: Callable[..., Settings],
) -> None:
    """The other way out: ids stay, keys are gone until a client or an admin gives them again."""
    settings = make_settings()
    ids = await register_all(settings)
    (settings.data_dir / "master.key").unlink()
    report = reset_stored_keys(settings)
    assert report.dropped == 3
    assert set(stored(settings).values()) == {""}
    registry = await Registry.open(settings)
    try:
        listed = {r.instance_id: r for r in await registry.list()}
        assert set(listed) == set(ids)
        assert listed[ids[0]].masked_key == "sk-t…cdef"
        with pytest.raises(StoredKeyUnavailable) as caught:
            registry.api_key(listed[ids[0]])
        assert caught.value.status == 409 and "secret reset" in caught.value.message
        assert registry.api_key(listed[ids[2]]) == ""  # keyless: nothing lost
        # An implicit client's next request carries the key: same id, key stored again.
        again, created = await registry.resolve(CONFIGS[0], implicit=True)
        assert (again.instance_id, created) == (ids[0], False)
        assert registry.api_key(await registry.get(ids[0])) == KEYS[0]
        # An admin gives the other one back.
        await registry.update(ids[1], {"api_key": KEYS[1]})
        assert registry.api_key(await registry.get(ids[1])) == KEYS[1]
    finally:
        await registry.close()
    actions = [
        json.loads(line) for line in (settings.data_dir / AUDIT_FILE).read_text().splitlines()
    ]
    (reset,) = [a for a in actions if a["action"] == "secret_reset"]
    assert reset["dropped"] == 3 and reset["key_id"] == report.key_id


async def test_keys_of_the_previous_release_are_upgraded_at_open(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """v1 rows become v2 bound to their base URL; a v1 row that does not open is left, refused."""
    settings = make_settings()
    ids = await register_all(settings)
    material = key_file_material(settings.data_dir)
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    with db:
        for instance_id, key in zip(ids, (*KEYS, ""), strict=True):
            db.execute(
                "UPDATE instances SET api_key = ? WHERE instance_id = ?",
                (v1_ciphertext(material, key, instance_id), instance_id),
            )
        damaged = v1_ciphertext(material, "sk-other", "pmem-other")
        db.execute("UPDATE instances SET api_key = ? WHERE instance_id = ?", (damaged, ids[1]))
    db.close()

    registry = await Registry.open(settings)
    try:
        after = stored(settings)
        assert after[ids[0]].startswith("v2.") and after[ids[2]].startswith("v2.")
        assert after[ids[1]] == damaged
        assert registry.api_key(await registry.get(ids[0])) == KEYS[0]
        with pytest.raises(StoredKeyUnavailable, match="v1"):
            registry.api_key(await registry.get(ids[1]))
        assert "not upgraded" in caplog.text
    finally:
        await registry.close()
    again = await Registry.open(settings)  # a second start finds nothing left to do
    await again.close()
    assert stored(settings)[ids[0]] == after[ids[0]]

    db = sqlite3.connect(settings.data_dir / DB_FILE)
    with db:
        db.execute(
            "UPDATE instances SET base_url = 'https://attacker.example/v1' WHERE instance_id = ?",
            (ids[0],),
        )
    db.close()
    registry = await Registry.open(settings)
    try:
        with pytest.raises(StoredKeyRejected):
            registry.api_key(await registry.get(ids[0]))
    finally:
        await registry.close()
