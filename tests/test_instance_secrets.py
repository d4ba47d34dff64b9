"""Instance secrets on a shared gateway (issue 9.5): issued once, stored hashed, rotatable.

An instance id is not a credential (it travels in configs, logs and URLs); on a shared gateway
binding by id also takes the secret that registration returned once. Implicit registration
by LLM headers needs none: the key itself is the proof.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.errors import ReadOnlyInstance, UnknownInstance
from gateway.instances.credentials import SECRET_PREFIX
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.settings import Settings

KEY = "sk-test-secret-0123456789abcdef"
CONFIG = InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEY, client="cursor")


@pytest.fixture
async def shared(make_settings: Callable[..., Settings]) -> AsyncIterator[Registry]:
    registry = await Registry.open(make_settings(shared=True))
    yield registry
    await registry.close()


def data_files(settings_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in settings_dir.rglob("*") if p.is_file())


async def test_registration_on_a_shared_gateway_returns_a_secret_once(
    shared: Registry, make_settings: Callable[..., Settings]
) -> None:
    """201 carries the secret, the repeat registration does not; only its hash is stored."""
    first = await shared.register(CONFIG, source="10.0.0.5")
    assert first.created and first.secret is not None
    assert first.secret.startswith(SECRET_PREFIX) and len(first.secret) > 40
    assert "~" not in first.secret and "/" not in first.secret
    again = await shared.register(CONFIG, source="10.0.0.5")
    assert (again.created, again.secret) == (False, None)
    assert again.record.instance_id == first.record.instance_id
    await shared.flush_usage()
    assert first.secret.encode() not in data_files(make_settings().data_dir)
    assert first.record.public()["has_secret"] is True


async def test_an_id_alone_does_not_bind_on_a_shared_gateway(shared: Registry) -> None:
    """Without the secret, with a wrong one, a truncated or a huge one: refused, no error."""
    registration = await shared.register(CONFIG)
    record, secret = registration.record, registration.secret
    assert secret is not None
    assert shared.verify_secret(record, secret)
    for wrong in (None, "", secret[:-1], secret + "x", "pmis-" + "A" * 43, "x" * 1_000_000):
        assert not shared.verify_secret(record, wrong)


async def test_rotation_and_revocation_reach_every_process_at_once(
    shared: Registry, make_settings: Callable[..., Settings]
) -> None:
    """Rotate in one process: another refuses the old secret on its very next check."""
    other = await Registry.open(make_settings(shared=True))
    try:
        registration = await shared.register(CONFIG)
        old = registration.secret
        instance_id = registration.record.instance_id
        assert other.verify_secret(await other.get(instance_id), old)  # cached there now
        new = await shared.rotate_secret(instance_id, source="admin")
        assert new != old
        seen = await other.get(instance_id)
        assert not other.verify_secret(seen, old) and other.verify_secret(seen, new)
        await shared.revoke_secret(instance_id, source="admin")
        seen = await other.get(instance_id)
        assert not other.verify_secret(seen, new) and not other.verify_secret(seen, None)
        assert seen.public()["has_secret"] is False
    finally:
        await other.close()


async def test_implicit_instances_get_no_secret_and_need_none_for_headers(
    shared: Registry,
) -> None:
    """Resolving LLM headers creates an instance without a secret; the key is the proof."""
    record, created = await shared.resolve(CONFIG, source="10.0.0.9", implicit=True)
    assert created and record.secret_hash == "" and record.source == "implicit"
    assert not shared.verify_secret(record, None)  # by id alone it cannot bind
    again, created = await shared.resolve(CONFIG, implicit=True)
    assert (again.instance_id, created) == (record.instance_id, False)


async def test_explicit_registration_of_an_implicit_instance_promotes_it(
    shared: Registry,
) -> None:
    """Registering a configuration first seen implicitly makes it an API instance (no expiry)."""
    record, _ = await shared.resolve(CONFIG, implicit=True)
    registration = await shared.register(CONFIG)
    assert registration.record.instance_id == record.instance_id
    assert registration.record.source == "api" and not registration.created
    assert (await shared.get(record.instance_id)).source == "api"


async def test_a_loopback_gateway_binds_by_id_alone_but_checks_a_given_secret(
    registry: Registry,
) -> None:
    """Not shared: no secret is issued or needed, and a secret that is sent must still match."""
    registration = await registry.register(CONFIG)
    assert registration.secret is None
    assert registry.verify_secret(registration.record, None)
    assert not registry.verify_secret(registration.record, "pmis-wrong")
    secret = await registry.rotate_secret(registration.record.instance_id)
    assert registry.verify_secret(await registry.get(registration.record.instance_id), secret)


async def test_secrets_of_unknown_and_file_instances_cannot_be_changed(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotating for an unknown id is 404; an instances.yaml instance points at its file."""
    settings = make_settings(shared=True)
    monkeypatch.setenv("YAML_INSTANCE_SECRET", "pmis-from-the-environment-0123456789")
    settings.instances_file.write_text(
        "instances:\n  pmem-yaml:\n    provider: ollama\n    model: llama3\n"
        "    secret_env: YAML_INSTANCE_SECRET\n"
    )
    registry = await Registry.open(settings)
    try:
        with pytest.raises(UnknownInstance):
            await registry.rotate_secret("pmem-0000000000000000")
        with pytest.raises(ReadOnlyInstance, match=r"instances\.yaml"):
            await registry.revoke_secret("pmem-yaml")
        record = await registry.get("pmem-yaml")
        assert registry.verify_secret(record, os.environ["YAML_INSTANCE_SECRET"])
        assert not registry.verify_secret(record, None)
    finally:
        await registry.close()


def test_shared_mode_follows_the_listening_address() -> None:
    """None means shared exactly when listening beyond loopback; a flag overrides it."""
    assert not Settings(host="127.0.0.1").is_shared
    assert not Settings(host="::1").is_shared
    assert Settings(host="0.0.0.0").is_shared  # noqa: S104 - a listen address under test
    assert Settings(host="127.0.0.1", shared=True).is_shared
    assert not Settings(host="0.0.0.0", shared=False).is_shared  # noqa: S104
    assert Settings.from_env({"POWERMEM_GATEWAY_SHARED": "yes"}).shared is True
