#!/usr/bin/env python
"""Serve bundle folders with a real MONAI Label server (``monailabel start_server``, monaibundle app) on 127.0.0.1 and
call ``POST /infer/<bundle>`` once per folder; what ``ci/check_monai_label.py`` repeats step by step, end to end.

Usage::

    python ci/monai_label_server.py --make-venv DIR              # once: a venv with monailabel 0.8.5 (see below)
    python ci/monai_label_server.py --python DIR/bin/python FOLDER=IMAGE [FOLDER=IMAGE ...] [--work W] [--port P]

For each ``FOLDER=IMAGE`` (an exported ``<bundle>_classification`` / ``<bundle>_segmentation`` folder and one input
file), the folder is copied into the app's ``model/`` folder and the image into the studies folder; then
``monailabel start_server --app <work>/apps/monaibundle --studies <work>/studies --host 127.0.0.1 --conf models
<names> --conf zoo_source local --conf sam2 false --conf preload false --conf skip_trainers true`` runs (offline: no
model-zoo look-up, no SAM2 weights, no trainers), ``GET /info/`` must list each model, and ``POST
/infer/<name>?image=<id>`` must answer 200: a classifier with one named score per class (``output=json``), a
segmenter with a label image (``output=image``) of the input's spatial size whose values the metadata names. One
line per model; exit status 0 when every answer passed. The server is stopped at the end; its log is
``<work>/server.log``.

MONAI Label cannot be installed beside this project's pins (``pip install -e ".[dev,dp]"``), so it runs from a
virtual environment of its own, made by ``--make-venv`` (the same commands by hand: the README's MONAI Label
section). Two things of that environment are not what ``pip install monailabel`` alone gives:

- ``pydicom<3``: monailabel 0.8.5 imports ``pydicom_seg`` 0.4.1 at start-up, which imports a module pydicom 3
  removed; pip picks dicomweb-client and pynetdicom releases that accept pydicom 2 with that constraint.
- torchvision: the registry's only torchvision for torch 2.13.0 (0.28.0) is a CUDA build whose ops do not load beside
  the CPU build of torch (``import torchvision``: "operator torchvision::nms does not exist"), and
  ``monailabel/transform/post.py`` (``Restored``) imports ``torchvision.utils`` at import time. The server therefore
  runs with ``ci/monailabel_shim`` first on its ``PYTHONPATH``: a stand-in ``torchvision`` with the two names that
  import needs, each raising when called; the infer path never calls them (see the shim's docstring). Pass
  ``--no-shim`` where a working torchvision is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIM = REPO_ROOT / "ci" / "monailabel_shim"
MONAILABEL = "monailabel==0.8.5"
#: pins of the MONAI Label venv beyond monailabel's own requirements (see the module docstring). They go to pip
#: through PIP_CONSTRAINT so that they also hold in build environments (sam2 builds from source and asks for torch).
CONSTRAINTS = ("torch==2.13.0", "pydicom<3")
#: the server's options that keep it offline and small
SERVER_CONF = {"zoo_source": "local", "sam2": "false", "preload": "false", "skip_trainers": "true"}

__all__ = ["MonaiLabelError", "find_python", "make_venv", "serve_and_infer"]


class MonaiLabelError(RuntimeError):
    """The server did not start, or an answer was not what the bundle's metadata promises; the message says which."""


def _env(python: str, shim: bool) -> dict:
    env = dict(os.environ)
    env["MONAILABEL_PYEXE"] = python  # the `monailabel` launcher runs `$MONAILABEL_PYEXE -m monailabel.main`
    env["PATH"] = str(Path(python).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTHONPATH", None)
    if shim:
        env["PYTHONPATH"] = str(SHIM)
    return env


def importable(python: str, shim: bool = True) -> str | None:
    """None when ``python`` imports MONAI Label's infer task (with the shim, if asked), else the reason, one line."""
    proc = subprocess.run(
        [python, "-c", "import monailabel.tasks.infer.bundle"],
        env=_env(python, shim),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return f"{python}: {lines[-1] if lines else 'import monailabel failed'}"


def find_python(shim: bool = True) -> tuple[str | None, str]:
    """An interpreter that has monailabel: this one, else ``$SYNTHAUG_MONAILABEL_PYTHON``; ``(None, why not)``."""
    candidates = [sys.executable]
    if os.environ.get("SYNTHAUG_MONAILABEL_PYTHON"):
        candidates.append(os.environ["SYNTHAUG_MONAILABEL_PYTHON"])
    reasons = []
    for python in candidates:
        reason = importable(python, shim)
        if reason is None:
            return python, ""
        reasons.append(reason)
    return None, "; ".join(reasons)


def make_venv(folder: str | os.PathLike) -> str:
    """A virtual environment at ``folder`` with monailabel 0.8.5 beside torch 2.13.0 (CPU); returns its python.
    Kept (not rebuilt) when it already imports monailabel."""
    folder = Path(folder).resolve()
    python = folder / "bin" / "python"
    if python.exists() and importable(str(python)) is None:
        return str(python)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fp:
        fp.write("\n".join(CONSTRAINTS) + "\n")
    env = dict(os.environ, PIP_CONSTRAINT=fp.name)
    try:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *CONSTRAINTS[:1], MONAILABEL], check=True, env=env)
    finally:
        os.unlink(fp.name)
    reason = importable(str(python))
    if reason:
        raise MonaiLabelError(f"monailabel installed in {folder} but does not import: {reason}")
    return str(python)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", timeout: float = 600) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _image_id(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".png", ".jpg", ".jpeg"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _label_ids(folder: Path) -> dict[str, int]:
    """The labels MONAI Label derives from the folder's metadata (``channel_def``, background left out)."""
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    pred = next(iter(meta["network_data_format"]["outputs"].values()))
    return {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}


def _check_answer(name: str, kind: str, labels: dict, status: int, body: bytes, image: Path, out: Path) -> dict:
    if status != 200:
        raise MonaiLabelError(f"POST /infer/{name}: HTTP {status}: {body[:300].decode(errors='replace')}")
    if kind == "classification":
        result = json.loads(body)
        scores = result.get("prediction", [])
        names = {i: n for n, i in labels.items()}
        got = {s["idx"]: s["label"] for s in scores}
        if got != names:
            raise MonaiLabelError(f"POST /infer/{name}: scores named {got}, the metadata's labels are {names}")
        total = sum(s["score"] for s in scores)
        return {"prediction": scores, "score_sum": total, "label_names": result.get("label_names")}
    import nibabel as nib

    from_server = out / f"{name}.nii.gz"
    from_server.write_bytes(body)
    label = np.asarray(nib.load(str(from_server)).dataobj)
    spatial = nib.load(str(image)).shape[:3]
    if tuple(label.shape[:3]) != tuple(spatial[: label.ndim]):
        raise MonaiLabelError(f"POST /infer/{name}: label of shape {label.shape}, the input's grid is {spatial}")
    values = sorted(np.unique(label).astype(int).tolist())
    unnamed = sorted(set(values) - {0, *labels.values()})
    if unnamed:
        raise MonaiLabelError(f"POST /infer/{name}: label values {unnamed} have no name in {labels}")
    return {"shape": tuple(label.shape), "values": values, "label_file": str(from_server)}


def serve_and_infer(
    python: str,
    cases: dict[str | os.PathLike, str | os.PathLike],
    work: str | os.PathLike,
    port: int | None = None,
    shim: bool = True,
    start_timeout: float = 300,
    stream=None,
) -> dict[str, dict]:
    """Start the server on ``cases`` (bundle folder -> one input image), call /infer once per folder, stop it.

    Returns, per model name, ``type`` and ``labels`` (as ``/info/`` lists them) and the checked answer: a
    classifier's ``prediction`` (``[{"idx", "label", "score"}]``), a segmenter's label ``shape`` and ``values``.
    Raises ``MonaiLabelError`` on the first failure (the server log's tail in the message when it died)."""
    stream = stream or sys.stdout
    work = Path(work)
    env = _env(python, shim)
    launcher = Path(python).parent / "monailabel"
    command = [str(launcher)] if launcher.exists() else [python, "-m", "monailabel.main"]
    apps, studies, out = work / "apps", work / "studies", work / "answers"
    for d in (studies, out):
        d.mkdir(parents=True, exist_ok=True)
    if not (apps / "monaibundle").is_dir():
        subprocess.run(
            [*command, "apps", "--download", "--name", "monaibundle", "--output", str(apps)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    app = apps / "monaibundle"
    models = {}
    for folder, image in cases.items():
        folder, image = Path(folder).resolve(), Path(image).resolve()
        shutil.rmtree(app / "model" / folder.name, ignore_errors=True)
        shutil.copytree(folder, app / "model" / folder.name, ignore=shutil.ignore_patterns("runs", "__pycache__"))
        shutil.copyfile(image, studies / image.name)
        models[folder.name] = (folder, studies / image.name)
    port = port or _free_port()
    conf = [a for k, v in ({"models": ",".join(models)} | SERVER_CONF).items() for a in ("--conf", k, v)]
    log = work / "server.log"
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as log_fp:
        server = subprocess.Popen(
            [*command, "start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1",
             "--port", str(port), *conf],
            env=env, stdout=log_fp, stderr=subprocess.STDOUT, cwd=work, start_new_session=True,
        )  # fmt: skip
    try:
        deadline, info = time.monotonic() + start_timeout, None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
                raise MonaiLabelError(f"monailabel start_server exited with {server.returncode}:\n{tail}")
            try:
                status, body = _request(f"{base}/info/", timeout=10)
                if status == 200:
                    info = json.loads(body)
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        if info is None:
            raise MonaiLabelError(f"monailabel start_server did not answer /info/ in {start_timeout:.0f} s ({log})")
        print(f"PASS server: {base} ({info.get('name')}), models {sorted(info.get('models', {}))}", file=stream)
        results = {}
        for name, (folder, image) in models.items():
            listed = info.get("models", {}).get(name)
            if listed is None:
                raise MonaiLabelError(f"/info/ does not list '{name}' (the server log says why: {log})")
            labels = _label_ids(folder)
            if listed.get("labels") != labels:
                raise MonaiLabelError(f"/info/ gives '{name}' labels {listed.get('labels')}, metadata {labels}")
            kind = listed.get("type")
            output = "json" if kind == "classification" else "image"
            status, body = _request(f"{base}/infer/{name}?image={_image_id(image)}&output={output}", method="POST")
            answer = _check_answer(name, kind, labels, status, body, image, out)
            results[name] = {"type": kind, "labels": labels, **answer}
            shown = answer.get("prediction") or f"label {answer.get('shape')} with values {answer.get('values')}"
            print(f"PASS POST /infer/{name} ({kind}): 200, {shown}", file=stream)
        return results
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", help="FOLDER=IMAGE: an exported bundle folder and one input image")
    ap.add_argument("--python", help="a python with monailabel (default: this one, else $SYNTHAUG_MONAILABEL_PYTHON)")
    ap.add_argument("--make-venv", type=Path, metavar="DIR", help="make (or reuse) a venv with monailabel at DIR")
    ap.add_argument("--work", type=Path, help="app, studies, answers and server.log (default: a temporary folder)")
    ap.add_argument("--port", type=int, help="default: a free one")
    ap.add_argument("--no-shim", action="store_true", help="no torchvision stand-in (a real torchvision imports)")
    args = ap.parse_args(argv)
    python = args.python
    if args.make_venv:
        python = make_venv(args.make_venv)
        print(f"monailabel venv: {python}")
    if not args.cases:
        return 0
    if python is None:
        python, why = find_python(not args.no_shim)
        if python is None:
            print(f"FAIL no interpreter with monailabel ({why}); make one with --make-venv DIR")
            return 1
    cases = {}
    for case in args.cases:
        folder, sep, image = case.partition("=")
        if not sep:
            ap.error(f"'{case}': give FOLDER=IMAGE")
        cases[folder] = image
    work = args.work or Path(tempfile.mkdtemp(prefix="monai_label_server_"))
    try:
        serve_and_infer(python, cases, work, port=args.port, shim=not args.no_shim)
    except (MonaiLabelError, subprocess.CalledProcessError, OSError, ValueError) as exc:
        print(f"FAIL {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
