"""Register a coding tool with the gateway once, and keep its id where the tool looks for it.

The gateway derives an id from the configuration, so registering the same configuration again
returns the same id. A changed configuration (a new key, say) for a tool that already has an
id is written over that instance with PUT, so the id stays and nothing stale is left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.clients.errors import ClientSetupError, GatewayRefused
from gateway.clients.gatewayapi import GatewayAPI
from gateway.clients.locations import IdLocation
from gateway.errors import InvalidConfig
from gateway.instances.model import InstanceConfig, mask_key

__all__ = ["Outcome", "checked_fields", "register", "unregister"]

Action = Literal["registered", "unchanged", "updated", "replaced"]


@dataclass(frozen=True)
class Outcome:
    instance_id: str
    action: Action
    # Something the user should know (an instance we could not clean up, …), or "".
    note: str = ""


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
    api: GatewayAPI, fields: dict[str, str], location: IdLocation | None, *, force: bool = False
) -> Outcome:
    """Register (or update) and save the id; see the module docstring for the rules.

    An update that would drop the saved instance's key (a keyless provider now) is refused
    unless `force`: a shell without the key's variable must never downgrade an instance.
    """
    saved = location.read() if location is not None else None
    outcome = await _register(api, fields, saved, force=force)
    if location is not None:
        location.write(outcome.instance_id)
    return outcome


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
        return Outcome(data["instance_id"], action, note)
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
        )
    try:
        await api.update(saved, fields)
    except GatewayRefused as exc:
        other = exc.details.get("instance_id")
        if exc.code == "CONFLICT" and isinstance(other, str) and other != saved:
            return await _adopt(api, other, saved)
        raise
    return Outcome(saved, "updated")


async def unregister(api: GatewayAPI, location: IdLocation) -> str | None:
    """Delete the saved instance and forget its id; the id, or None when none was saved."""
    saved = location.read()
    if saved is None:
        return None
    try:
        await api.delete(saved)
    except GatewayRefused as exc:
        if exc.status != 404 and exc.code != "INVALID_CONFIG":
            raise
    location.remove()
    return saved
