"""What a user would train instead of our engine, loaded from a local copy of its code that this project never ships.

The benchmarks run two reference implementations side by side with ours, at equal settings:

- pytorch/examples' DCGAN (``dcgan/main.py``), against the liver_lesion_gan DCGAN step;
- junyanz/pytorch-CycleGAN-and-pix2pix's U-Net + PatchGAN (``models/networks.py``), against brain_pix2pix.

Their code is theirs: it is not in this repository and nothing downloads it at run time. Put a copy in one folder

    DIR/pytorch_examples_dcgan/main.py       from https://github.com/pytorch/examples, dcgan/main.py
    DIR/junyanz_pix2pix/models/networks.py   from https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix, the same path

and pass ``--reference_dir DIR`` (or set ``SYNTHAUG_REFERENCE_DIR=DIR``); without it the reference cases are skipped
with one line that says this. Only the network definitions are taken from those files; each benchmark writes the
reference's training step itself, following what the reference's loop does (``bench_*.py``, ``_reference_step``).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import io
import os
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ENV = "SYNTHAUG_REFERENCE_DIR"
DCGAN_FILE = "pytorch_examples_dcgan/main.py"
PIX2PIX_FILE = "junyanz_pix2pix/models/networks.py"
_SOURCES = {
    DCGAN_FILE: "https://github.com/pytorch/examples, file dcgan/main.py",
    PIX2PIX_FILE: "https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix, file models/networks.py",
}


def add_reference_argument(parser) -> None:
    """``--reference_dir DIR`` (default: ``$SYNTHAUG_REFERENCE_DIR``)."""
    parser.add_argument(
        "--reference_dir",
        default=os.environ.get(ENV),
        help=f"folder with the reference implementations (default: ${ENV}); see benchmarks/_reference.py",
    )


def reference_file(reference_dir: str | None, relative: str) -> Path | None:
    """The reference file under ``reference_dir``, or None (after printing how to get it) when it is not there."""
    path = Path(reference_dir) / relative if reference_dir else None
    if path is not None and path.is_file():
        return path
    where = f"{reference_dir}/{relative}" if reference_dir else f"DIR/{relative}"
    print(
        f"# reference cases skipped: copy {_SOURCES[relative]} to {where} and pass --reference_dir DIR "
        f"(or set {ENV}); the project never ships or downloads it"
    )
    return None


def _defined(tree: ast.Module, names: set[str]) -> list[ast.stmt]:
    return [n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name in names]


def load_dcgan(path: Path, *, nz: int, ngf: int, ndf: int, nc: int) -> SimpleNamespace:
    """pytorch/examples' DCGAN networks at the given widths: ``Generator(ngpu)``, ``Discriminator(ngpu)``,
    ``weights_init``.

    ``dcgan/main.py`` is a script (argparse, data set and training at import), so it is never imported: its
    ``Generator``/``Discriminator`` class definitions (``_netG``/``_netD`` in its older versions) and ``weights_init``
    are taken from the parsed file and run in a namespace holding the globals they read (``nz, ngf, ndf, nc, ngpu``).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = _defined(tree, {"Generator", "Discriminator", "_netG", "_netD", "weights_init"})
    ns = {"__name__": "reference_dcgan", "torch": torch, "nn": nn}
    ns.update(nz=nz, ngf=ngf, ndf=ndf, nc=nc, ngpu=1)  # the script's globals its classes read
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), ns)  # noqa: S102 (the user's own copy)
    gen, disc = ns.get("Generator", ns.get("_netG")), ns.get("Discriminator", ns.get("_netD"))
    if gen is None or disc is None or "weights_init" not in ns:
        raise RuntimeError(f"{path}: no Generator/_netG, Discriminator/_netD or weights_init found")
    return SimpleNamespace(Generator=gen, Discriminator=disc, weights_init=ns["weights_init"])


_PIX2PIX_NAMES = {
    "get_norm_layer", "init_weights", "GANLoss", "UnetGenerator", "UnetSkipConnectionBlock", "NLayerDiscriminator",
}  # fmt: skip


def load_pix2pix(path: Path):
    """junyanz's ``models/networks.py`` as a module (it imports only torch); should a version import more, the
    definitions the pix2pix step needs are taken from the parsed file instead (``_PIX2PIX_NAMES``)."""
    spec = importlib.util.spec_from_file_location("reference_pix2pix_networks", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module
    except ImportError:
        tree = ast.parse(path.read_text(), filename=str(path))
        ns = {"__name__": "reference_pix2pix_networks", "torch": torch, "nn": nn, "functools": functools}
        ns["init"] = nn.init
        exec(compile(ast.Module(body=_defined(tree, _PIX2PIX_NAMES), type_ignores=[]), str(path), "exec"), ns)  # noqa: S102
        return SimpleNamespace(**{k: ns[k] for k in _PIX2PIX_NAMES})


def quiet(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with its prints swallowed (the reference's init prints; a case's stdout is its JSON)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)
