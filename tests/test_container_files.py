"""The container files, read as an operator's `docker compose up` would use them.

No container engine runs here (none can pull a base image), so these check what a careless
edit would break without anyone noticing until a deployment: an unpinned package in the
image, a variable the gateway does not read, a secret file nobody mounts, a stop that kills
powermem before it has flushed.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.process.worker import SHUTDOWN_TIMEOUT
from gateway.proxy.managed import ManagedUpstream
from gateway.settings import unknown_variables

DOCKER = Path(__file__).resolve().parent.parent / "docker"
IMAGE_EXTRAS = ("managed", "team")  # what the image targets install


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def _pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def _installed_closure(name: str, extras: tuple[str, ...]) -> set[str]:
    """Every distribution `name[extras]` needs here, by the installed packages' metadata."""
    found: set[str] = set()
    todo = [(name, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        current, wanted = todo.pop()
        key = canonicalize_name(current)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        try:
            dist = distribution(current)
        except PackageNotFoundError:
            continue  # needed only where a marker says so, and not on this machine
        found.add(key)
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in wanted or {""}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found - {canonicalize_name(name)}


def test_the_image_pins_every_package_it_installs() -> None:
    """A dependency added to pyproject but not to constraints.txt would install unpinned."""
    missing = _installed_closure("powermem-gateway", IMAGE_EXTRAS) - set(_pinned())
    assert not missing, f"add to docker/constraints.txt: {sorted(missing)}"


def test_every_pip_install_in_the_dockerfile_is_constrained() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs
    assert all("-c /src/constraints.txt" in line for line in installs), installs


def test_every_build_target_compose_names_exists_in_the_dockerfile() -> None:
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", (DOCKER / "Dockerfile").read_text(), re.M))
    targets = {
        service["build"]["target"]
        for service in _compose()["services"].values()
        if "build" in service
    }
    assert targets and targets <= stages, (targets, stages)


def test_compose_passes_the_gateway_only_variables_it_reads() -> None:
    """A misspelt POWERMEM_GATEWAY_* in compose would be ignored inside the container."""
    for name, service in _compose()["services"].items():
        environment = service.get("environment") or {}
        assert unknown_variables(environment) == [], name


def test_every_secret_file_a_service_names_is_mounted_for_it() -> None:
    compose = _compose()
    declared = set(compose["secrets"])
    for name, service in compose["services"].items():
        mounted = set(service.get("secrets") or [])
        assert mounted <= declared, name
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in mounted, (name, variable)


def test_the_stop_grace_period_outlasts_the_gateways_own_stop() -> None:
    """docker stop sends SIGKILL after the grace period: it must come after the gateway has
    let open requests finish and powermem has had its own stop timeout."""
    defaults = ManagedUpstream.__init__.__kwdefaults__ or {}
    needed = SHUTDOWN_TIMEOUT + float(defaults["stop_timeout"])
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue  # not our image
        assert service.get("init") is True, name
        grace = re.fullmatch(r"(\d+)s", str(service["stop_grace_period"]))
        assert grace is not None and int(grace.group(1)) > needed, (name, needed)
