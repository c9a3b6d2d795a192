"""The metadata.json checks: ``metadata_schema``, ``metadata_schema_url``, ``metadata_version``, ``version_bump``.

The metadata is what the zoo and MONAI's tools read first, so it is validated by MONAI's own
``monai.bundle.verify_metadata`` against the official schema it names, read from local byte copies whose sha256 is
pinned (a loosened copy would prove nothing, and nothing is downloaded); the schema must be the one the zoo uses for
such a network (the generator schema for a latent input); and ``version`` must be the newest changelog key and, with
``--base``, newer than at that git revision when any file of the bundle changed, so that users can tell releases
apart. The package pins of the metadata are checked in ``packages``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from .base import REPO_ROOT, Bundle, Report, quiet, sha256

#: the official MONAI metadata schemas, byte copies outside the project (never copied into it)
SCHEMA_DIR = REPO_ROOT.parent / "shared" / "schema"
SCHEMA_URL_BASE = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
GENERAL_SCHEMA = "meta_schema_20240725.json"
GENERATOR_SCHEMA = "meta_schema_generator_20220718.json"
#: file name -> sha256 of the published file: a local copy that differs is not the official schema
OFFICIAL_SCHEMAS: dict[str, str] = {
    GENERAL_SCHEMA: "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678",
    GENERATOR_SCHEMA: "5265725aa5f57bfaccabf64d5f01c9aaa0dddcbb8d0510415c48f1ff6e7c8f99",
}


def _version_key(version: str) -> tuple:
    """Sort key for bundle versions: PEP 440 when it parses, else the tuple of its integers."""
    try:
        from packaging.version import InvalidVersion, Version

        try:
            return (1, Version(version))
        except InvalidVersion:
            pass
    except ImportError:
        pass
    return (0, tuple(int(x) for x in re.findall(r"\d+", version)))


def load_metadata(b: Bundle, r: Report) -> dict | None:
    if not b.meta_file.is_file():
        r.skip("metadata_schema", "configs/metadata.json is missing")
        return None
    try:
        meta = json.loads(b.meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        r.fail("metadata_schema", f"configs/metadata.json is not valid JSON: {e}")
        return None
    if not isinstance(meta, dict):
        r.fail("metadata_schema", "configs/metadata.json is not a JSON object")
        return None
    return meta


def _schema_name(meta: dict) -> str | None:
    """The file name the ``schema`` URL ends in (what MONAI's ``verify_metadata`` would download)."""
    url = meta.get("schema")
    return url.rstrip("/").rsplit("/", 1)[-1] if isinstance(url, str) and url.strip() else None


def expected_schema(meta: dict) -> str:
    """The official schema the zoo uses for this network: the generator one for a latent input, else the general."""
    fmt = meta.get("network_data_format")
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    if isinstance(inputs, dict) and (
        "latent" in inputs or any(isinstance(v, dict) and v.get("type") == "noise" for v in inputs.values())
    ):
        return GENERATOR_SCHEMA
    return GENERAL_SCHEMA


def _schema_errors(meta: dict, schema: dict) -> list[str]:
    """Every error of ``meta`` against ``schema`` as ``path: message`` (MONAI's message names one, without a path)."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(meta), key=lambda e: list(e.absolute_path))
    messages = []
    for error in errors:
        # an anyOf error ("a tensor or a scalar") says little; best_match descends to the sub-error that does
        best = jsonschema.exceptions.best_match([error])
        where = "/".join(str(p) for p in best.absolute_path) or "(top level)"
        messages.append(f"{where}: {best.message}")
    return messages


def check_metadata_schema(b: Bundle, meta: dict, r: Report) -> None:
    name = "metadata_schema"
    if not SCHEMA_DIR.is_dir():
        r.skip(name, f"{SCHEMA_DIR} is absent: the official MONAI schema files are read from there, never downloaded")
        return
    schema_name = _schema_name(meta)
    if schema_name is None:
        r.fail(name, "no 'schema' field: MONAI's verify_metadata needs the URL of the schema")
        return
    schema_file = SCHEMA_DIR / schema_name
    if schema_name not in OFFICIAL_SCHEMAS or not schema_file.is_file():
        r.fail(
            name,
            f"'schema' names {schema_name}, not an official schema in {SCHEMA_DIR} ({', '.join(OFFICIAL_SCHEMAS)})",
        )
        return
    digest = OFFICIAL_SCHEMAS[schema_name]
    if sha256(schema_file) != digest:
        r.fail(name, f"{schema_file} is not the official file (its sha256 differs from {digest})")
        return
    try:
        import jsonschema  # noqa: F401  (MONAI's verify_metadata needs it; a clear message when it is missing)
    except ImportError:
        r.fail(name, "jsonschema is not installed (pip install jsonschema): MONAI's verify_metadata needs it")
        return
    from monai.bundle import verify_metadata

    try:
        with quiet():
            # the local file is the download target: it exists with the official hash, so nothing is downloaded
            verify_metadata(meta_file=str(b.meta_file), filepath=str(schema_file), hash_val=digest, hash_type="sha256")
    except ValueError as e:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        messages = _schema_errors(meta, schema) or [str(e)]
        more = f" (+{len(messages) - 5} more)" if len(messages) > 5 else ""
        r.fail(name, f"invalid against {schema_name}: " + "; ".join(messages[:5]) + more)
        return
    r.ok(name, f"valid against {schema_name} (monai.bundle.verify_metadata, {os.path.relpath(schema_file, REPO_ROOT)})")


def check_metadata_schema_url(meta: dict, r: Report) -> None:
    name = "metadata_schema_url"
    schema_name = _schema_name(meta)
    want = expected_schema(meta)
    if schema_name is None:
        r.fail(name, f"no 'schema' field (want {SCHEMA_URL_BASE}{want})")
    elif schema_name not in OFFICIAL_SCHEMAS:
        r.fail(name, f"'schema' is {meta['schema']!r}, not an official MONAI schema ({', '.join(OFFICIAL_SCHEMAS)})")
    elif schema_name != want:
        why = "it has a latent input (a generator)" if want == GENERATOR_SCHEMA else "it has no latent input"
        r.fail(name, f"'schema' names {schema_name}, but {why}: the zoo uses {want}")
    else:
        r.ok(name, schema_name)


def check_metadata_version(meta: dict, r: Report) -> None:
    version, changelog = meta.get("version"), meta.get("changelog")
    if not isinstance(version, str) or not isinstance(changelog, dict) or not changelog:
        r.fail("metadata_version", "needs a string 'version' and a non-empty 'changelog' object")
        return
    newest = max(changelog, key=_version_key)
    if version not in changelog:
        r.fail("metadata_version", f"version {version} is not a changelog key (newest is {newest})")
    elif version != newest:
        r.fail("metadata_version", f"version {version} is not the newest changelog key ({newest})")
    else:
        r.ok("metadata_version", version)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def check_version_bump(b: Bundle, meta: dict, base: str, r: Report) -> None:
    """A bundle whose files differ from ``base`` (a git revision) must carry a newer ``version`` than at ``base``."""
    rel = b.root.relative_to(REPO_ROOT).as_posix()
    old_text = _git("show", f"{base}:{rel}/configs/metadata.json")
    if old_text is None:
        r.ok("version_bump", f"new bundle (no metadata.json at {base})")
        return
    changed = _git("diff", "--name-only", base, "--", rel)
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", rel)
    if changed is None:
        r.fail("version_bump", f"cannot compare with git revision {base!r}")
        return
    files = [f for f in (changed + (untracked or "")).splitlines() if f.strip()]
    old_version = json.loads(old_text).get("version", "0")
    if not files:
        r.ok("version_bump", f"unchanged since {base}")
    elif _version_key(meta.get("version", "0")) > _version_key(old_version):
        r.ok("version_bump", f"{old_version} -> {meta.get('version')} ({len(files)} file(s) changed)")
    else:
        r.fail(
            "version_bump",
            f"{len(files)} file(s) changed since {base} (e.g. {files[0]}) but version is still {old_version}: "
            "bump 'version' and add a changelog entry",
        )
