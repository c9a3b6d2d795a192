"""Checks of the JSON configs: ``config_parse``, ``config_keys``, ``config_refs`` and ``run_ids``.

Every config must parse with ``monai.bundle.ConfigParser`` on its own and in the combinations that the README's
commands and the smoke run merge; the runnable ones must define the ids that the zoo and MONAI Label read
(``CONFIG_KEYS``), have no ``@id`` reference to a missing id, and define the run ids the commands call
(``training`` and ``run`` in train.json, ``run`` in inference.json); and nothing in inference.json outside
``initialize`` may depend on ``initialize``, because apps such as MONAI Label read items by id without running it.
``load_config`` and ``config_label`` are also used by the network and smoke checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .base import Bundle, Report, quiet

CONFIG_KEYS: tuple[str, ...] = ("bundle_root", "device", "dataset_dir", "output_dir", "network_def", "network")


def config_label(files: Sequence[Path]) -> str:
    """``train.json`` for one file, ``train+evaluate+quick`` for several."""
    return files[0].name if len(files) == 1 else "+".join(f.stem for f in files)


def load_config(files: Sequence[Path], meta_file: Path | None = None) -> Any:
    """A parsed (macros and relative ids resolved, nothing evaluated) ``ConfigParser`` of ``files`` merged in order."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    with quiet():
        parser.read_config([str(f) for f in files])
        if meta_file is not None and meta_file.is_file():
            parser.read_meta(str(meta_file))
        parser.parse(reset=True)
    return parser


def _walk(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(id, value) of every node of a config, ids joined with ``#``."""
    yield prefix, config
    if isinstance(config, dict):
        items: Any = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return
    for k, v in items:
        yield from _walk(v, f"{prefix}#{k}" if prefix else str(k))


def _references(config: Any) -> Iterator[tuple[str, str]]:
    """(id of the item, referenced id) for every ``@ref`` in a config, both with ``#`` separators."""
    from monai.bundle.reference_resolver import ReferenceResolver

    for item_id, value in _walk(config):
        if isinstance(value, str):
            for ref in ReferenceResolver.match_refs_pattern(value):
                yield item_id, ref.replace("::", "#")


def _is_under(item_id: str, root: str) -> bool:
    return item_id == root or item_id.startswith(root + "#")


def check_configs(b: Bundle, r: Report) -> dict[str, Any]:
    """Parse every config and the combinations the commands use; return the parsers by label."""
    parsers: dict[str, Any] = {}
    singles = sorted(p for p in b.configs.glob("*.json") if p.name != "metadata.json") if b.configs.is_dir() else []
    for path in singles:
        name = f"config_parse:{path.name}"
        try:
            parsers[path.name] = load_config([path], b.meta_file)
            r.ok(name)
        except Exception as e:
            r.fail(name, f"{type(e).__name__}: {e}")

    train, inference, evaluate, quick = (
        b.config(n) for n in ("train.json", "inference.json", "evaluate.json", "quick.json")
    )
    combos: list[list[Path]] = [[train, evaluate, quick], [train, quick, *b.optional("smoke.json")]]
    if b.optional("smoke_inference.json"):
        combos.append([inference, *b.optional("smoke_inference.json")])
    for files in combos:
        label = config_label(files)
        name = f"config_parse:{label}"
        if not all(f.is_file() for f in files):
            r.skip(name, "missing " + ", ".join(f.name for f in files if not f.is_file()))
            continue
        try:
            parsers[label] = load_config(files, b.meta_file)
            r.ok(name)
        except Exception as e:
            r.fail(name, f"{type(e).__name__}: {e}")

    # the runnable configurations: each must have the keys and resolvable references
    for label in ("train.json", "inference.json", config_label([train, evaluate, quick])):
        parser = parsers.get(label)
        if parser is None:
            r.skip(f"config_keys:{label}", "not parsed")
            r.skip(f"config_refs:{label}", "not parsed")
            continue
        missing = [k for k in CONFIG_KEYS if k not in parser]
        if missing:
            r.fail(f"config_keys:{label}", "missing " + ", ".join(missing))
        else:
            r.ok(f"config_keys:{label}")
        dangling = sorted(
            {f"@{ref} (in {item or '<root>'})" for item, ref in _references(parser.get()) if ref not in parser}
        )
        if dangling:
            r.fail(f"config_refs:{label}", "unknown id(s): " + ", ".join(dangling[:10]))
        else:
            r.ok(f"config_refs:{label}")

    check_run_ids(parsers, r)
    return parsers


def check_run_ids(parsers: dict[str, Any], r: Report) -> None:
    train = parsers.get("train.json")
    if train is None:
        r.skip("run_ids:train.json", "train.json not parsed")
    else:
        missing = [k for k in ("training", "run") if k not in train]
        if missing:
            r.fail(
                "run_ids:train.json", "missing run id(s) " + ", ".join(missing) + " (define both 'training' and 'run')"
            )
        else:
            r.ok("run_ids:train.json")

    inference = parsers.get("inference.json")
    if inference is None:
        r.skip("run_ids:inference.json", "inference.json not parsed")
        return
    problems = [] if "run" in inference else ["missing run id 'run'"]
    init_refs = sorted(
        f"{item} -> @{ref}"
        for item, ref in _references(inference.get())
        if _is_under(ref, "initialize") and not _is_under(item, "initialize")
    )
    if init_refs:
        problems.append("items outside 'initialize' refer to initialize-only state: " + ", ".join(init_refs))
    if problems:
        r.fail("run_ids:inference.json", "; ".join(problems))
    else:
        r.ok("run_ids:inference.json")
