"""Refuse a mistyped or ill-typed command-line override before any work, in one line.

``python -m monai.bundle run ... --batch_sz 8`` adds a new key ``batch_sz`` that nothing reads, so the run goes on
with the default batch size; ``--max_epochs abc`` or ``--batch_size 0`` fail deep inside training with a long
traceback. ``train.json``, ``inference.json`` call ``common.bundle.check_overrides()`` in their ``initialize`` list,
which looks at the overrides that ``monai.bundle run`` was given and raises one ``DataError`` (one line on stderr,
see ``common.errors``) for

- a key that no config file of the run defines (nor ``--tracking``'s settings), with the nearest known key; a
  nested key may add an argument to a component (``--gan#lapgan#level_epochs [400,1,1]``) if its ``_target_`` takes
  it;
- a value that is not a whole number >= 1 for a size or count key: one whose value in the config files is a whole
  number >= 1 (or ``null``), also through ``@`` references and ``"$64 if ... else 32"`` expressions, and whose name
  says it is a size or a count (``max_epochs``, ``batch_size``, ``gan_steps``, ``n_synthetic_per_class``,
  ``classifier_epochs``, ``image_size``, ...; not ``finetune_epochs`` or ``mbstd_group_size``, where 0 means
  something); a non-number for any other key whose config value is a number (``g_lr``, ``seed``, ``a_max``, ...);
- a value other than ``false``/``False``/``0``/``true``/``True``/``1`` for a true/false key (one whose config value is
  a bool). Fire hands ``--use_anatomy false`` in as the *string* ``"false"``, which Python reads as true; so the
  accepted spellings are turned into real bools in the running workflow's ``ConfigParser`` here, before any work.

Values that are themselves expressions or references (``$...``, ``@...``, ``%...``) are left to MONAI.

The overrides are read from ``monai.bundle``'s own ``create_workflow`` call (its arguments, including an
``--args_file``'s, as MONAI parsed them), found on the call stack; if MONAI ever stops making them reachable, from
``sys.argv`` of a ``python -m monai.bundle run ...`` command. A workflow built in Python (``ConfigWorkflow(...)``,
as the tests do) is not checked.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
import pydoc
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.errors import DataError

__all__ = ["BOOL_SPELLINGS", "as_bool", "check_overrides", "cli_overrides", "parse_cli_args", "running_workflow"]

# monai.bundle's own arguments: not config keys
MONAI_ARGS = frozenset(
    {
        "config_file",
        "meta_file",
        "logging_file",
        "tracking",
        "args_file",
        "init_id",
        "run_id",
        "final_id",
        "workflow_name",
        "workflow_type",
        "properties_path",
    }
)
_REF = re.compile(r"@([\w#:]+)")
# a size or a count, by its name: 0 or less makes no sense (a positive-int key named otherwise, a_max=400,
# ada_speed_kimg=500, checkpoint_interval, only has to be a number)
_SIZE_NAME = re.compile(
    r"^n_|(epochs|steps|size|per_class|folds|repeats|levels|_dim|layers|channels|resolution|slices)$"
)
# sizes for which 0 means something: fine-tune for classifier_epochs; no minibatch-std layer
_ZERO_OK = frozenset({"finetune_epochs", "mbstd_group_size"})
# the spellings a true/false key accepts on the command line (Fire has already made False/True/0/1 Python values)
BOOL_SPELLINGS = ("false", "False", "0", "true", "True", "1")
_TRUE = frozenset({"true", "True", "1"})


class _Run:
    """What a ``monai.bundle`` run was given: its overrides, its config files and its ``--tracking``."""

    def __init__(self, overrides: dict, config_files: Any, tracking: Any = None):
        self.overrides, self.config_files, self.tracking = overrides, config_files, tracking


def _from_stack() -> _Run | None:
    """The arguments of ``monai.bundle.scripts.create_workflow`` if it is on the call stack (it initialises the
    workflow, which evaluates the ``initialize`` list)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "create_workflow" and frame.f_globals.get("__name__") == "monai.bundle.scripts":
            local = frame.f_locals
            args, config_file = local.get("_args"), local.get("config_file")
            if not isinstance(args, Mapping) or config_file is None:
                return None
            exclude = set(MONAI_ARGS)
            cls = local.get("workflow_class")
            if inspect.isclass(cls):
                params = inspect.signature(cls.__init__).parameters.values()
                exclude |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
            overrides = {k: v for k, v in args.items() if k not in exclude}
            return _Run(overrides, config_file, args.get("tracking"))
        frame = frame.f_back
    return None


def _parse_value(text: str) -> Any:
    try:
        from fire.parser import DefaultParseValue

        return DefaultParseValue(text)
    except ImportError:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text


def parse_cli_args(tokens: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``(positional, {key: value})`` of ``monai.bundle``-style arguments (after the command name), as Fire reads
    them: ``--key value``, ``--key=value``, a bare ``--flag`` is ``True``, values parsed as Python literals where they
    are ones (``8`` -> 8, ``abc`` -> 'abc', ``[1,2]`` -> [1, 2]), ``-`` in a key read as ``_``; ``--`` ends them."""
    positional: list[str] = []
    keys: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            name, eq, text = token[2:].partition("=")
            name = name.replace("-", "_")
            if eq:
                keys[name] = _parse_value(text)
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                keys[name] = _parse_value(tokens[i + 1])
                i += 1
            else:
                keys[name] = True
        else:
            positional.append(token)
        i += 1
    return positional, keys


def _from_argv(argv: Sequence[str] | None = None) -> _Run | None:
    """The overrides of a ``python -m monai.bundle run [run_id] --key value ...`` command line, if this is one."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or Path(argv[0]).parts[-3:] != ("monai", "bundle", "__main__.py"):
        return None
    if argv[1] not in ("run", "run_workflow"):
        return None
    _, keys = parse_cli_args(argv[2:])
    if "args_file" in keys:
        from monai.bundle.scripts import update_kwargs

        args_file = keys.pop("args_file")
        keys = update_kwargs(args=args_file, **keys)
    if keys.get("config_file") is None:
        return None
    overrides = {k: v for k, v in keys.items() if k not in MONAI_ARGS and v is not None}
    return _Run(overrides, keys["config_file"], keys.get("tracking"))


def cli_overrides() -> tuple[dict[str, Any], Any, Any] | None:
    """``(overrides, config_file, tracking)`` of the ``monai.bundle`` run in progress, or ``None`` outside one."""
    run = _from_stack() or _from_argv()
    return None if run is None else (run.overrides, run.config_files, run.tracking)


def _load_files(config_files: Any) -> list[dict]:
    from monai.bundle import ConfigParser

    if isinstance(config_files, Mapping):
        return [dict(config_files)]
    if isinstance(config_files, (str, Path)):
        config_files = [config_files]
    contents = []
    for f in config_files:
        content = dict(f) if isinstance(f, Mapping) else ConfigParser.load_config_file(f)
        contents.append(content if isinstance(content, dict) else {})
    return contents


def _lookup(content: Any, key: str) -> tuple[bool, Any]:
    """``(found, value)`` of id ``key`` (``a#b#0``) in one config file's content; a file may also set ``a#b``."""
    if isinstance(content, dict) and key in content:
        return True, content[key]
    head, sep, rest = key.partition("#")
    if not sep:
        return False, None
    if isinstance(content, dict) and head in content:
        return _lookup(content[head], rest)
    if isinstance(content, list) and head.isdigit() and int(head) < len(content):
        return _lookup(content[int(head)], rest)
    return False, None


def _all_ids(content: Any, prefix: str = "") -> list[str]:
    ids = []
    items = content.items() if isinstance(content, dict) else enumerate(content) if isinstance(content, list) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        ids.append(key)
        ids.extend(_all_ids(v, key + "#"))
    return ids


class _Kinds:
    """What kind of value each config id holds across a run's config files: a whole number >= 1, a number, or
    something else."""

    def __init__(self, files: list[dict]):
        self.files = files

    def of_id(self, key: str, seen: frozenset = frozenset()) -> set[str]:
        if key in seen:
            return {"other"}
        kinds: set[str] = set()
        for content in self.files:
            found, value = _lookup(content, key)
            if found:
                kinds |= self.of_value(value, seen | {key})
        return kinds

    def of_value(self, value: Any, seen: frozenset = frozenset()) -> set[str]:
        if isinstance(value, bool):
            return {"bool"}
        if isinstance(value, int):
            return {"posint" if value > 0 else "number"}
        if isinstance(value, float):
            return {"number"}
        if value is None:
            return {"none"}
        if isinstance(value, str):
            ref = re.fullmatch(r"@([\w#:]+)", value)
            if ref:
                return self.of_id(ref.group(1).replace("::", "#"), seen) or {"other"}
            if value.startswith("$"):
                return self._of_expression(value[1:], seen)
        return {"other"}

    def _of_expression(self, text: str, seen: frozenset) -> set[str]:
        refs: list[str] = []

        def name(match: re.Match) -> str:
            refs.append(match.group(1).replace("::", "#"))
            return f"__ref{len(refs) - 1}__"

        try:
            tree = ast.parse(_REF.sub(name, text).strip(), mode="eval").body
        except SyntaxError:
            return {"other"}

        def kinds(node: ast.AST) -> set[str]:
            if isinstance(node, ast.IfExp):
                return kinds(node.body) | kinds(node.orelse)
            if isinstance(node, ast.Constant):
                return self.of_value(node.value) if not isinstance(node.value, str) else {"other"}
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
                inner = kinds(node.operand)
                return {"number"} if inner <= {"posint", "number"} and inner else {"other"}
            if isinstance(node, ast.Name) and re.fullmatch(r"__ref\d+__", node.id):
                return self.of_id(refs[int(node.id[5:-2])], seen) or {"other"}
            return {"other"}

        return kinds(tree)

    def kind(self, key: str) -> str | None:
        """``"posint"``, ``"number"``, ``"bool"`` or ``None`` (not checked) for id ``key``."""
        kinds = self.of_id(key) - {"none"}
        if kinds == {"bool"}:
            return "bool"
        if not kinds or kinds & {"other", "bool"}:
            return None
        name = key.rsplit("#", 1)[-1]
        return "posint" if kinds == {"posint"} and _SIZE_NAME.search(name) and name not in _ZERO_OK else "number"


def _target_params(target: Any) -> tuple[set[str], bool] | None:
    """``(argument names, takes **kwargs)`` of a component's ``_target_``, or ``None`` if it cannot be looked at."""
    try:
        if isinstance(target, str):
            if "." not in target:  # a short MONAI name ("CheckpointLoader"), resolved as MONAI does
                from monai.bundle.config_item import ConfigComponent

                target = ConfigComponent({"_target_": target}).resolve_module_name()
            target = pydoc.locate(target) if isinstance(target, str) else target
        if target is None or not callable(target):
            return None
        params = inspect.signature(target).parameters.values()
    except Exception:
        return None
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _new_argument(key: str, files: list[dict]) -> tuple[bool, list[str]]:
    """Whether ``key`` (``a#b#name``) adds an argument that the component ``a#b`` (a dict with ``_target_``) takes,
    as ``--gan#lapgan#level_epochs [400, 1, 1]`` does; and the component's argument ids, for a suggestion."""
    parent, sep, name = key.rpartition("#")
    if not sep:
        return False, []
    component = None
    for content in files:
        found, value = _lookup(content, parent)
        if found:
            component = value
    if not isinstance(component, dict) or "_target_" not in component:
        return False, []
    if name.startswith("_") and name.endswith("_"):  # _mode_, _disabled_, _requires_, _desc_
        return True, []
    found = _target_params(component["_target_"])
    if found is None:
        return True, []  # cannot tell: MONAI will say so if it is wrong
    names, var_keyword = found
    return var_keyword or name in names, [f"{parent}#{n}" for n in sorted(names)]


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def as_bool(value: Any) -> bool | None:
    """``value`` as a bool if it is one of the accepted spellings (``BOOL_SPELLINGS``, or a bool, or the int 0/1 that
    Fire makes of ``0``/``1``), else ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in BOOL_SPELLINGS:
        return value in _TRUE
    return None


def _value_error(key: str, value: Any, kind: str | None) -> str | None:
    if kind is None or (isinstance(value, str) and value[:1] in ("$", "@", "%")):
        return None
    if kind == "bool":
        if as_bool(value) is None:
            return f"--{key} {_show(value)}: {key} is true or false: pass one of {', '.join(BOOL_SPELLINGS)}"
        return None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "posint" and not (is_number and isinstance(value, int) and value >= 1):
        return f"--{key} {_show(value)}: {key} must be a whole number >= 1"
    if kind == "number" and not (is_number and math.isfinite(value)):
        return f"--{key} {_show(value)}: {key} must be a number"
    return None


def _tracking_keys(tracking: Any) -> set[str]:
    """Keys that ``--tracking`` settings add to a run (``--tracking_uri``, ``--experiment_name``, ...)."""
    if tracking is None:
        return set()
    try:
        from monai.bundle import ConfigParser
        from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

        if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
            settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
        elif isinstance(tracking, Mapping):
            settings = tracking
        else:
            settings = ConfigParser.load_config_files(tracking)
        return set(settings.get("configs", {})) | {"save_execute_config", "output_dir"}
    except Exception:  # MONAI has read the settings already; a failure here must not hide the run's own error
        return {"save_execute_config", "output_dir"}


def running_workflow() -> Any:
    """The innermost ``monai.bundle`` ``ConfigWorkflow`` on the call stack (being initialised or run, as
    ``create_workflow``'s ``workflow_`` or a workflow method's ``self``), or ``None`` outside a workflow.

    Read its attributes with ``vars(workflow)``: ``getattr`` on a workflow (and on its ``ConfigParser``) may evaluate
    config ids through ``__getattr__``."""
    from monai.bundle import ConfigWorkflow

    frame = sys._getframe(1)
    while frame is not None:
        for name in ("self", "workflow_"):
            workflow = frame.f_locals.get(name)
            if isinstance(workflow, ConfigWorkflow):
                return workflow
        frame = frame.f_back
    return None


def _running_parser() -> Any:
    """The ``ConfigParser`` of the ``monai.bundle`` workflow being initialised, or ``None``."""
    from monai.bundle import ConfigParser

    workflow = running_workflow()
    parser = vars(workflow).get("parser") if workflow is not None else None
    return parser if isinstance(parser, ConfigParser) else None


def _set_bools(parser: Any, values: Mapping[str, bool]) -> None:
    """Put the converted true/false overrides into ``parser`` and parse it again, so that every later reference
    (``@use_anatomy``) sees the bool and not Fire's string."""
    changed = False
    for key, value in values.items():
        try:
            if parser[key] is value:
                continue
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # not in this parser (a key of a --tracking setting): nothing to convert
        parser[key] = value
        changed = True
    if changed:
        parser.parse(reset=True)


def check_overrides(
    overrides: Mapping[str, Any] | None = None, config_files: Any = None, tracking: Any = None, parser: Any = None
) -> dict[str, Any]:
    """Raise one ``DataError`` line for every command-line override that names no key of the run's config files
    (with the nearest known key) or gives a known size/number/true-false key a value of the wrong type; nothing
    outside a ``monai.bundle`` run. ``overrides``/``config_files``/``tracking`` default to those of the run in
    progress, ``parser`` to its ``ConfigParser``: the accepted spellings of a true/false key (``BOOL_SPELLINGS``)
    become real bools there. Returns the overrides, with those bools."""
    if overrides is None:
        found = cli_overrides()
        if found is None:
            return {}
        overrides, cli_files, cli_tracking = found
        config_files = cli_files if config_files is None else config_files
        tracking = cli_tracking if tracking is None else tracking
        parser = _running_parser() if parser is None else parser
    if not overrides or config_files is None:
        return dict(overrides or {})
    files = _load_files(config_files)
    ids = {i.replace("::", "#") for content in files for i in _all_ids(content)}
    extra = _tracking_keys(tracking)
    kinds = _Kinds(files)
    errors = []
    bools: dict[str, bool] = {}  # config id -> the bool its override means
    converted = dict(overrides)
    for raw_key, value in overrides.items():
        key = str(raw_key).replace("::", "#")
        if key not in ids and key not in extra and not key.startswith("_meta_"):
            accepted, arguments = _new_argument(key, files)
            if accepted:
                continue
            depth = key.count("#")
            candidates = sorted({i for i in ids | extra if i.count("#") == depth} | set(arguments))
            close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
            hint = f"; did you mean --{close[0]}?" if close else ""
            errors.append(f"unknown key --{raw_key}: no config file of this run defines it{hint}")
            continue
        kind = kinds.kind(key)
        problem = _value_error(str(raw_key), value, kind)
        if problem:
            errors.append(problem)
        elif kind == "bool" and as_bool(value) is not None:
            bools[key] = converted[raw_key] = as_bool(value)
    if errors:
        names = ", ".join(Path(str(f)).name for f in _as_list(config_files))
        raise DataError("; ".join(errors) + f" (config files: {names})")
    if parser is not None and bools:
        _set_bools(parser, bools)
    return converted


def _as_list(config_files: Any) -> list:
    if isinstance(config_files, (str, Path, Mapping)):
        return [config_files if not isinstance(config_files, Mapping) else "<dict>"]
    return [f if not isinstance(f, Mapping) else "<dict>" for f in config_files]
