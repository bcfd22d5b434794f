"""The lock files (docs/security.md): every dependency pinned with hashes, consistent with pyproject.toml and with
each other, and used by `make venv`, `make fast` and the image. Regenerate them with `make lock`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME, BUILD, DEV = ROOT / "requirements.lock", ROOT / "requirements-build.lock", ROOT / "requirements-dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
PYTHONS = ("3.11", "3.12", "3.13")  # the project's Python (>=3.11): the machines' and the image's


def pins(path: Path) -> dict[str, list[tuple[str, str | None, list[str]]]]:
    """name -> [(version, marker, hashes)] (a universal lock may pin a name twice, under exclusive markers)."""
    found: dict[str, list] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := PIN.match(line):
            current = (m.group(2), m.group(3), [])
            found.setdefault(canonicalize_name(m.group(1)), []).append(current)
        elif (h := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line)) and current is not None:
            current[2].append(h.group(1))
    return found


def version_for(lock: dict, name: str, python: str) -> str | None:
    """The version `pip install -r` takes on Linux x86_64 with that Python (None: not installed there)."""
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    chosen = [v for v, marker, _ in lock.get(canonicalize_name(name), []) if not marker or Marker(marker).evaluate(env)]
    assert len(chosen) <= 1, f"{name}: several pins apply on Python {python}"
    return chosen[0] if chosen else None


def build_requirements() -> list[str]:
    hook = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]
    return [*PYPROJECT["build-system"]["requires"], *hook["dependencies"]]


@pytest.mark.parametrize("path", [RUNTIME, BUILD, DEV], ids=lambda p: p.name)
def test_every_pin_is_exact_and_hashed(path):
    text = path.read_text()
    locked = pins(path)
    assert locked, f"{path.name} pins nothing"
    for name, entries in locked.items():
        for version, _, hashes in entries:
            assert hashes, f"{path.name}: {name}=={version} has no hash (pip --require-hashes refuses it)"
    # nothing unpinned slipped in (an -e, a URL, a bare name)
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            assert PIN.match(line), f"{path.name}: not an exact pin: {line}"


@pytest.mark.parametrize(("path", "requirements"), [
    (RUNTIME, PYPROJECT["project"]["dependencies"]),
    (DEV, PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["test"]),
    (DEV, build_requirements()),
    (BUILD, build_requirements()),
], ids=["runtime", "dev-test", "dev-build", "build"])
def test_the_locks_satisfy_pyproject(path, requirements):
    """A dependency added to pyproject.toml without `make lock` fails here (pip --no-deps would not notice)."""
    locked = pins(path)
    for python in PYTHONS:
        for text in requirements:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"python_version": python, "extra": ""}):
                continue
            version = version_for(locked, req.name, python)
            assert version is not None, f"{req.name} is not in {path.name}: run `make lock`"
            assert req.specifier.contains(version, prereleases=True), \
                f"{path.name}: {req.name}=={version} does not satisfy {text!r}: run `make lock`"


@pytest.mark.parametrize("path", [RUNTIME, BUILD], ids=lambda p: p.name)
def test_the_image_locks_pin_what_development_tests(path):
    """The image installs the versions CI tested: every pin of the image's locks equals the dev lock's."""
    dev, locked = pins(DEV), pins(path)
    for python in PYTHONS:
        for name in locked:
            assert version_for(locked, name, python) == version_for(dev, name, python), (name, python)
    for name, entries in locked.items():  # the same files, too
        assert {h for e in entries for h in e[2]} <= {h for e in dev[name] for h in e[2]}, name


def test_make_and_the_image_install_from_the_locks():
    makefile = (ROOT / "Makefile").read_text()
    assert "DEV_LOCK := requirements-dev.lock" in makefile
    installs = re.findall(r"pip install[^\n]*", makefile)
    for line in installs:
        assert "--require-hashes -r $(DEV_LOCK)" in line or "--no-deps" in line or "ruff==" in line, line
    assert "--no-build-isolation -e ." in makefile and "--no-build-isolation $(FAST)/src" in makefile.replace(
        "\\\n\t  ", "")
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    assert "pip install --no-cache-dir --require-hashes -r requirements-build.lock" in dockerfile
    assert "--require-hashes --only-binary=:all: --no-deps -r requirements.lock" in dockerfile
    assert "--require-hashes -r /wheels/requirements.lock" in dockerfile
    assert "--no-deps --no-build-isolation" in dockerfile
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"!requirements.lock", "!requirements-build.lock"} <= set(ignore)


def test_the_lock_check_notices_a_missing_dependency(tmp_path):
    stale = tmp_path / "requirements.lock"
    stale.write_text("\n".join(line for line in RUNTIME.read_text().splitlines()
                               if not line.startswith("orjson==")))
    assert version_for(pins(stale), "orjson", "3.12") is None and version_for(pins(RUNTIME), "orjson", "3.12")
