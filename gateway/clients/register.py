"""Register a coding tool with the gateway once, and point the tool at its own instance.

The gateway derives an id from the configuration, so registering the same configuration again
returns the same id. A changed configuration (a new key, say) for a tool that already has an
id is written over that instance with PUT, so the id stays and nothing stale is left behind.

Then the tool's knob (gateway.clients.knobs) gets the instance-scoped URL, and its id file
the id. On a shared gateway the scoped URL carries the instance secret, which the gateway
shows once, at the first registration: it is kept only in the tool's own config file (0600),
taken from there on the next run, and when it is lost a new one is issued (admin token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.clients.errors import ClientSetupError, GatewayRefused
from gateway.clients.gatewayapi import GatewayAPI
from gateway.clients.knobs import Records, unwire, wire
from gateway.clients.scoped import scoped_url
from gateway.clients.tools import Tool
from gateway.errors import InvalidConfig
from gateway.instances.model import InstanceConfig, mask_key

__all__ = ["Outcome", "Registered", "checked_fields", "register", "unregister"]

Action = Literal["registered", "unchanged", "updated", "replaced"]


@dataclass(frozen=True)
class Outcome:
    instance_id: str
    action: Action
    # Something the user should know (an instance we could not clean up, …), or "".
    note: str = ""
    # The instance secret, when the gateway just issued one (shared gateways; shown once).
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Registered:
    """What `register` did: the instance, its scoped base URL (with the secret, if any: never
    print it unmasked), whether the tool's knob changed, and notes for the user."""

    outcome: Outcome
    base: str = field(repr=False)
    knob_changed: bool = False
    notes: list[str] = field(default_factory=list)


def _secret(data: dict[str, Any]) -> str | None:
    secret = data.get("secret")
    return secret if isinstance(secret, str) and secret else None


def checked_fields(
    *, client: str, provider: str, model: str, api_key: str, base_url: str
) -> dict[str, str]:
    """The register body, validated and normalised exactly as the gateway will see it."""
    try:
        config = InstanceConfig.parse(
            client=client, provider=provider, model=model, api_key=api_key, base_url=base_url
        )
    except InvalidConfig as exc:
        raise ClientSetupError(exc.message) from None
    return {
        "client": config.client,
        "provider": config.provider,
        "model": config.model,
        "api_key": config.api_key,
        "base_url": config.base_url,
    }


def _looks_same(current: dict[str, Any], fields: dict[str, str]) -> bool:
    """Whether the stored instance matches `fields` as far as its masked view can tell."""
    visible = ("client", "provider", "model", "base_url")
    return all(current.get(k, "") == fields[k] for k in visible) and current.get(
        "api_key", ""
    ) == mask_key(fields["api_key"])


async def _saved_instance(api: GatewayAPI, saved: str) -> tuple[dict[str, Any] | None, bool]:
    """(the stored instance or None, whether it still exists)."""
    try:
        return await api.show(saved), True
    except GatewayRefused as exc:
        if exc.status == 404 or exc.code == "INVALID_CONFIG":
            return None, False
        if exc.status != 401:
            raise
    # No admin token: ask the way a client would (the gateway checks ids before forwarding).
    return None, await api.is_known(saved)


async def _adopt(api: GatewayAPI, new_id: str, old_id: str) -> Outcome:
    """The wanted configuration already lives in `new_id`: use it and drop the old instance."""
    await api.delete(old_id)
    return Outcome(new_id, "replaced", f"removed the previous instance {old_id}")


async def register(
    api: GatewayAPI,
    fields: dict[str, str],
    tool: Tool | None,
    records: Records,
    *,
    force: bool = False,
) -> Registered:
    """Register (or update), then save the id and turn the tool's knob; see the docstring.

    An update that would drop the saved instance's key (a keyless provider now) is refused
    unless `force`: a shell without the key's variable must never downgrade an instance.
    A tool file that register could not write is refused before anything is registered.
    """
    saved = tool.saved_id() if tool is not None else None
    if tool is not None and tool.knob is not None:
        tool.knob.file.check()
    outcome = await _register(api, fields, saved, force=force)
    iid = outcome.instance_id
    secret = outcome.secret or (tool.saved_secret(iid) if tool is not None else None)
    secret, notes = await _usable_secret(api, iid, secret)
    base = scoped_url(api.url, iid, secret)
    changed = False
    if tool is not None:
        if tool.id_file is not None:
            tool.id_file.write(iid)
        if tool.knob is not None:
            changed = wire(tool.knob, tool.knob.url_for(base), records)
            notes += tool.knob.file.current_notes()
    return Registered(outcome, base, changed, notes)


async def _usable_secret(
    api: GatewayAPI, instance_id: str, secret: str | None
) -> tuple[str | None, list[str]]:
    """A secret with which the scoped URL binds (None where the gateway needs none)."""
    check = await api.scoped(scoped_url(api.url, instance_id, secret))
    if check.state == "bound":
        return secret, []
    if check.state == "unknown":
        why = check.message or f"HTTP {check.status}"
        raise ClientSetupError(f"The gateway does not take the scoped URL of {instance_id}: {why}")
    fresh = await api.rotate_secret(instance_id)
    why = "the saved one is no longer valid" if secret else "the first one was not kept"
    return fresh, [
        f"this gateway is shared: issued a new instance secret for {instance_id} ({why}); "
        "it is kept only in the tool's config file"
    ]


async def _register(
    api: GatewayAPI, fields: dict[str, str], saved: str | None, *, force: bool
) -> Outcome:
    current, exists = (None, False) if saved is None else await _saved_instance(api, saved)
    if current is not None and current.get("api_key") and not fields["api_key"] and not force:
        raise ClientSetupError(
            f"The saved instance {saved} has a key ({current['api_key']}) and this update "
            f"({fields['provider']} / {fields['model']}) has none: it would drop the key. "
            "Provide the key, or pass --force to make it keyless; nothing was changed."
        )
    if saved is None or not exists:
        data = await api.register(fields)
        note = f"the saved id {saved} was no longer registered" if saved else ""
        action: Action = "registered" if data["created"] or saved else "unchanged"
        return Outcome(data["instance_id"], action, note, _secret(data))
    if current is None:
        # It exists but we may not read or change it without the admin token.
        data = await api.register(fields)
        if data["instance_id"] == saved:
            return Outcome(saved, "unchanged")
        return Outcome(
            data["instance_id"],
            "registered",
            f"the configuration changed, and the previous instance {saved} could not be "
            "updated or removed without the admin token (POWERMEM_GATEWAY_ADMIN_TOKEN); "
            f"remove it with `powermem-gateway instances remove {saved}`",
            _secret(data),
        )
    if _looks_same(current, fields):
        data = await api.register(fields)
        if data["instance_id"] == saved:
            return Outcome(saved, "unchanged")
        if not data["created"]:
            return await _adopt(api, data["instance_id"], saved)
        # Same masked key, different key: undo the new instance, update the saved one.
        await api.delete(data["instance_id"])
    if current.get("read_only"):
        data = await api.register(fields)
        return Outcome(
            data["instance_id"],
            "registered",
            f"the previous instance {saved} is managed in instances.yaml and was left as it is",
            _secret(data),
        )
    try:
        await api.update(saved, fields)
    except GatewayRefused as exc:
        other = exc.details.get("instance_id")
        if exc.code == "CONFLICT" and isinstance(other, str) and other != saved:
            return await _adopt(api, other, saved)
        raise
    return Outcome(saved, "updated")


async def unregister(api: GatewayAPI, tool: Tool, records: Records) -> tuple[str | None, list[str]]:
    """Delete the saved instance, undo register's change to the tool's knob and remove the
    id file: (the id or None when none was saved, what was done to the files)."""
    saved = tool.saved_id()
    if saved is None:
        return None, []
    try:
        await api.delete(saved)
    except GatewayRefused as exc:
        if exc.status != 404 and exc.code != "INVALID_CONFIG":
            raise
    done = []
    if tool.knob is not None:
        done.append(unwire(tool.knob, saved, records))
    if tool.id_file is not None and tool.id_file.remove():
        done.append(f"removed {tool.id_file.path}")
    return saved, done
