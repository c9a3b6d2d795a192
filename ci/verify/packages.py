"""The ``metadata_packages`` check: the metadata pins exact versions of the third-party packages a bundle needs.

A user installs what ``required_packages_version`` lists, so every pin must be an exact version that a package
index serves (never this repository's own distribution, which no index serves: a packaged bundle carries its
``common`` copy), every package of setup.cfg's ``install_requires`` must be pinned within its range there, the
``monai``/``torch``/``numpy`` pins must equal ``monai_version``/``pytorch_version``/``numpy_version``, and, because
MONAI reads ``optional_packages_version`` as the older name of ``required_packages_version`` and puts it in that
one's place, optional pins (when present) must include every required pin.
"""

from __future__ import annotations

import configparser
import re
from typing import Any

from .base import REPO_ROOT, Report

#: this repository's own distribution: on no package index, so a bundle must not require it (it carries ``common``)
OWN_PACKAGE = "synthaug-bundles"
#: the pins of these packages must equal the metadata's ``<field>``
VERSION_FIELDS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}


def _setup_cfg_requirements() -> dict[str, dict[str, str]]:
    """setup.cfg's requirements: ``{"install_requires": {name: specifier}, "<extra>": {...}}`` (names normalised)."""
    ini = configparser.ConfigParser()
    if not ini.read(REPO_ROOT / "setup.cfg", encoding="utf-8"):
        return {}
    groups: dict[str, str] = {}
    if ini.has_option("options", "install_requires"):
        groups["install_requires"] = ini.get("options", "install_requires")
    if ini.has_section("options.extras_require"):
        groups.update(ini.items("options.extras_require"))
    out: dict[str, dict[str, str]] = {}
    for group, text in groups.items():
        reqs = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", line)
            if m:
                reqs[_normalise(m.group(1))] = m.group(2).strip()
        out[group] = reqs
    return out


def _normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def _exact_version(value: Any) -> bool:
    """``"1.6.1"``-like: a released version, not a range, a wildcard or a URL."""
    return isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?(\.post\d+)?", value.strip()) is not None


def _in_range(version: str, specifier: str) -> bool:
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # packaging comes with pip/setuptools; without it the ranges are not checked
        return True
    return SpecifierSet(specifier).contains(version, prereleases=True)


def check_metadata_packages(meta: dict, r: Report) -> None:
    name = "metadata_packages"
    required = meta.get("required_packages_version")
    if not isinstance(required, dict) or not required:
        r.fail(name, "needs a non-empty 'required_packages_version' object (package -> exact version)")
        return
    optional = meta.get("optional_packages_version", {})
    if not isinstance(optional, dict):
        r.fail(name, "'optional_packages_version' must be an object (package -> exact version)")
        return
    problems: list[str] = []
    reqs = _setup_cfg_requirements()
    install_requires = reqs.get("install_requires", {})
    extras = {pkg: spec for group, specs in reqs.items() if group != "install_requires" for pkg, spec in specs.items()}
    for field_name, pins in (("required_packages_version", required), ("optional_packages_version", optional)):
        for package, version in pins.items():
            key = _normalise(package)
            if key == OWN_PACKAGE:
                problems.append(
                    f"{field_name} pins {package}, which no package index serves (a packaged bundle carries its "
                    "'common' copy): pin the third-party packages instead"
                )
            elif not _exact_version(version):
                problems.append(f"{field_name}: {package} {version!r} is not an exact version")
            else:
                spec = install_requires.get(key, extras.get(key, ""))
                if not _in_range(version.strip(), spec):
                    problems.append(f"{field_name}: {package} {version} is outside setup.cfg's range {spec!r}")
    pinned = {_normalise(p) for p in required}
    missing = sorted(set(install_requires) - pinned - {OWN_PACKAGE})
    if missing:
        problems.append("required_packages_version lacks setup.cfg install_requires " + ", ".join(missing))
    if "optional_packages_version" in meta:
        # MONAI maps the older name optional_packages_version onto required_packages_version when it reads the
        # metadata (monai.bundle.utils.DEPRECATED_ID_MAPPING), replacing it: the generator schema requires the older
        # name, so it must carry every required pin too, or a run would see fewer pins than the file declares
        lost = sorted(p for p, v in required.items() if str(optional.get(p)) != str(v))
        if lost:
            problems.append(
                "optional_packages_version replaces required_packages_version when MONAI reads the metadata, "
                "but lacks (or pins another version of) " + ", ".join(lost)
            )
    for package, field_name in VERSION_FIELDS.items():
        pin = next((str(v) for p, v in required.items() if _normalise(p) == package), None)
        if pin is not None and meta.get(field_name) is not None and pin != str(meta[field_name]):
            problems.append(f"required_packages_version pins {package} {pin} but {field_name} is {meta[field_name]}")
    if problems:
        r.fail(name, "; ".join(problems))
    else:
        r.ok(name, f"{len(required)} required, {len(optional)} optional package(s) pinned")
