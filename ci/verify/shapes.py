"""The shape rules of ``network_shape``: dummy inputs built from ``network_data_format``, and the output it expects.

It checks nothing on its own; ``network`` feeds these inputs to the bundle's network. The metadata describes inputs
by channels, spatial shape (integers, ``"*"`` or expressions of one-letter variables such as ``"2**n"``), dtype,
value range and type, so each input kind gets a batch of ``BATCH`` that a real caller could pass (class ids for an
integer input, N(0, 1) for ``type: noise``, one-hot maps for label inputs); size expressions are evaluated with
integer arithmetic only (never ``eval``: the metadata is data), and one value is chosen for all variables so that
inputs and outputs agree. The rules are listed under ``network_shape`` in ci/verify_bundle.py's docstring.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from typing import Any

ANY_SIZE = 32  # a "*" spatial size in network_data_format
MIN_VARIABLE_SIZE = 16  # one-letter size variables ("2**n") are chosen so that every size is at least this
BATCH = 2

_SAFE_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _eval_size(expr: str, env: dict[str, int]) -> float:
    """Evaluate a spatial_shape expression such as ``"2**n*m"`` with integer arithmetic only (never ``eval``)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _SAFE_OPS:
            return _SAFE_OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _SAFE_OPS:
            return _SAFE_OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"unsupported spatial_shape expression {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def _variables(expr: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)}


def bind_size_variables(shapes: Sequence[Sequence[Any]]) -> dict[str, int]:
    """One value for all one-letter variables of the input shapes: the smallest making every size >= 16."""
    exprs = [s for shape in shapes for s in shape if isinstance(s, str) and s.strip() != "*"]
    names = sorted(set().union(*(_variables(e) for e in exprs))) if exprs else []
    if not names:
        return {}
    for value in range(1, 9):
        env = dict.fromkeys(names, value)
        sizes = [_eval_size(e, env) for e in exprs]
        if all(float(s).is_integer() and s >= MIN_VARIABLE_SIZE for s in sizes):
            return env
    return dict.fromkeys(names, 4)


def input_size(entry: Any, env: dict[str, int]) -> int:
    if isinstance(entry, int):
        return entry
    if entry.strip() == "*":
        return ANY_SIZE
    return int(_eval_size(entry, env))


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def dummy_input(spec: Any, env: dict[str, int], generator: Any) -> Any:
    """A batch of 2 matching one ``network_data_format.inputs`` entry (rules: ci/verify_bundle.py, network_shape)."""
    import torch

    if not isinstance(spec, dict):
        return spec  # a plain scalar argument
    channels = int(spec.get("num_channels", 1))
    spatial = [input_size(s, env) for s in spec.get("spatial_shape", [])]
    dtype = _torch_dtype(spec.get("dtype", "float32"))
    value_range = spec.get("value_range") or []
    kind, fmt = spec.get("type"), str(spec.get("format", "")).lower()

    if not dtype.is_floating_point and dtype != torch.bool:
        if len(value_range) == 2:
            lo, hi = int(value_range[0]), int(value_range[1])
        else:
            lo, hi = 0, max(len(spec.get("channel_def") or {}), channels, 1) - 1
        shape = [BATCH] if not spatial and channels <= 1 else [BATCH, channels, *spatial]
        return torch.randint(lo, hi + 1, shape, generator=generator, dtype=torch.int64).to(dtype)
    shape = [BATCH, channels, *spatial]
    if kind == "noise":
        return torch.randn(shape, generator=generator).to(dtype)
    if fmt in ("labels", "classes", "segmentation") and channels > 1:
        ids = torch.randint(0, channels, [BATCH, *spatial], generator=generator)
        return torch.movedim(torch.nn.functional.one_hot(ids, channels), -1, 1).to(dtype)
    if len(value_range) == 2:
        lo, hi = float(value_range[0]), float(value_range[1])
        return (lo + (hi - lo) * torch.rand(shape, generator=generator)).to(dtype)
    return torch.randn(shape, generator=generator).to(dtype)


def expected_output_ok(spec: dict, shape: tuple[int, ...], env: dict[str, int]) -> bool:
    channels = int(spec.get("num_channels", 1))
    spatial = list(spec.get("spatial_shape", []))
    if not spatial and channels <= 1 and shape == (BATCH,):
        return True  # e.g. a discriminator score of shape (B,)
    if len(shape) != 2 + len(spatial) or shape[0] != BATCH or shape[1] != channels:
        return False
    for want, got in zip(spatial, shape[2:], strict=True):
        if isinstance(want, int):
            if want != got:
                return False
        elif want.strip() != "*" and _variables(want) <= set(env) and _eval_size(want, env) != got:
            return False  # sizes with variables the inputs do not bind are free
    return True
