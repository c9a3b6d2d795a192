"""Visual Turing test kit: a reader tells real from synthetic images; we score how often they are fooled.

He et al. 2019 showed radiologists real and generated lung CT patches and report that generated ones were taken
for real in 56.7 % of trials. This module lets anyone repeat such a reader study on any bundle's data:

``write`` draws ``n_real`` real and ``n_synthetic`` synthetic images, windows them to 8-bit gray, enlarges them for
viewing and writes them in random order as ``case_0001.png`` ... under ``out_dir``, with ``answers.csv`` (a
template the reader fills: ``case,answer`` with ``real`` or ``synthetic``) and ``instructions.txt``. The truth goes
to a *separate* folder (``key_dir``, default ``<out_dir>_key``) that is not handed to the reader:
``answer_key.json`` lists, per case, the truth, the class and the source file. The key is sealed: its SHA-256 is
written into the reader's folder (``key_sha256.txt``), so a key edited after the reading no longer matches.

``score`` reads the filled ``answers.csv`` and the key and reports, each with an exact binomial (Clopper-Pearson)
95 % interval: the reader's accuracy (with the two-sided binomial test against chance, 0.5), the share of synthetic
images taken for real (the paper's 56.7 %), and the share of real images taken for real.

Command line (bundle-agnostic: any datalist / data folder that ``load_classification_dataset`` reads)::

    python -m common.protocol.turing write --real REAL --synthetic SYN --out DIR [--key KEYDIR] \\
        [--n_real 50 --n_synthetic 50 --a_min -1000 --a_max 400 --display_size 128 --seed 0]
    python -m common.protocol.turing score --answers DIR/answers.csv --key KEYDIR/answer_key.json [--out score.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.io import read_image
from common.errors import DataError
from common.fs import atomic_write_text

__all__ = ["clopper_pearson", "score_turing_test", "write_turing_test"]

ANSWERS = ("real", "synthetic")
KEY_NAME = "answer_key.json"
SEAL_NAME = "key_sha256.txt"
ANSWERS_NAME = "answers.csv"


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval of a proportion ``k / n`` (Clopper & Pearson 1934); (0, 1) when n = 0."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def _proportion(k: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n)
    return {"value": k / n if n else None, "k": int(k), "n": int(n), "ci95": [lo, hi], "ci_method": "clopper-pearson"}


def _to_png_pixels(array: np.ndarray, a_min: float, a_max: float, display_size: int) -> np.ndarray:
    """(C, X, Y[, Z]) image in file units -> uint8 (display, display) gray, windowed, enlarged without smoothing
    (readers see the pixels as they are; interpolation would soften real and synthetic alike, but unequally)."""
    from PIL import Image

    if array.ndim == 4:  # a volume: its middle slice
        array = array[..., array.shape[-1] // 2]
    gray = array[0].T  # MONAI's first spatial axis is image x (columns): back to (rows, cols) for display
    gray = np.clip((gray - a_min) / (a_max - a_min), 0.0, 1.0)
    pixels = np.round(gray * 255.0).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).resize((display_size, display_size), Image.NEAREST))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_turing_test(
    real_items: Sequence[dict],
    synthetic_items: Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    key_dir: str | os.PathLike | None = None,
    n_real: int = 50,
    n_synthetic: int = 50,
    a_min: float = -1000.0,
    a_max: float = 400.0,
    class_names: Sequence[str] | None = None,
    display_size: int = 128,
    seed: int = 0,
    image_key: str = "image",
) -> dict[str, str]:
    """Write a shuffled reader set (PNGs + answer template) and its sealed key; return their paths.

    Real and synthetic images are drawn without replacement, stratified by class where items carry a ``label``
    (so that class does not give the source away), in a random order fixed by ``seed``.

    Raises:
        DataError: too few real or synthetic images for ``n_real`` / ``n_synthetic``, an unreadable image (naming
            it), or an ``out_dir`` that already holds a reader set (a second set would mix with the first).
    """
    out, key = Path(out_dir), Path(key_dir) if key_dir is not None else Path(f"{Path(out_dir)}_key")
    if out.resolve() == key.resolve() or key.resolve().is_relative_to(out.resolve()):
        raise DataError(f"key_dir '{key}' must lie outside out_dir '{out}': the reader gets out_dir")
    if (out / ANSWERS_NAME).exists() or (key / KEY_NAME).exists():
        raise DataError(f"'{out}' or '{key}' already holds a Turing test set: choose new folders")
    rng = np.random.default_rng(seed)
    chosen = [("real", it) for it in _draw(real_items, n_real, rng, "real", image_key)] + [
        ("synthetic", it) for it in _draw(synthetic_items, n_synthetic, rng, "synthetic", image_key)
    ]
    order = rng.permutation(len(chosen))
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    key.mkdir(parents=True, exist_ok=True)
    cases = []
    for number, index in enumerate(order, start=1):
        truth, item = chosen[int(index)]
        case = f"case_{number:04d}"
        pixels = _to_png_pixels(read_image(item[image_key]), a_min, a_max, display_size)
        Image.fromarray(pixels).save(out / "images" / f"{case}.png", format="PNG")
        label = item.get("label")
        cases.append(
            {
                "case": case,
                "truth": truth,
                "label": None if label is None else int(label),
                "class": class_names[int(label)] if class_names is not None and label is not None else None,
                "source": str(item[image_key]),
            }
        )
    answers = out / ANSWERS_NAME
    with open(answers, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "answer"])
        writer.writerows([c["case"], ""] for c in cases)
    atomic_write_text(
        out / "instructions.txt",
        f"Visual Turing test: {len(cases)} images in images/, some real, some made by a generative model.\n"
        f"For every case write 'real' or 'synthetic' in the 'answer' column of {ANSWERS_NAME} and return that file.\n"
        f"Window: [{a_min:g}, {a_max:g}] in the images' units mapped to black..white; images enlarged "
        f"{display_size} px without smoothing. Do not open the answer key.\n",
    )
    key_file = key / KEY_NAME
    content = {
        "n_real": len([c for c in cases if c["truth"] == "real"]),
        "n_synthetic": len([c for c in cases if c["truth"] == "synthetic"]),
        "seed": seed,
        "window": [a_min, a_max],
        "class_names": None if class_names is None else list(class_names),
        "cases": cases,
    }
    atomic_write_text(key_file, json.dumps(content, indent=1) + "\n")
    atomic_write_text(out / SEAL_NAME, _sha256(key_file) + "\n")
    return {"reader_dir": str(out), "answers": str(answers), "key": str(key_file)}


def _draw(items: Sequence[dict], n: int, rng: np.random.Generator, what: str, image_key: str) -> list[dict]:
    items = list(items)
    if n < 0 or n > len(items):
        raise DataError(f"Turing test: asked for {n} {what} images, only {len(items)} available")
    if any(image_key not in it for it in items):
        raise DataError(f"Turing test: a {what} item has no '{image_key}' key")
    labels = [it.get("label") for it in items]
    if n == 0:
        return []
    if any(v is None for v in labels):
        return [items[i] for i in rng.choice(len(items), size=n, replace=False)]
    # Stratified: each class in proportion to its share (largest remainders), so class mix matches between sources.
    by_class: dict[int, list[int]] = {}
    for i, v in enumerate(labels):
        by_class.setdefault(int(v), []).append(i)
    classes = sorted(by_class)
    share = np.array([len(by_class[c]) for c in classes], float) / len(items) * n
    counts = np.floor(share).astype(int)
    for j in np.argsort(-(share - counts))[: n - counts.sum()]:
        counts[j] += 1
    picked = []
    for c, k in zip(classes, counts, strict=True):
        picked += [by_class[c][i] for i in rng.choice(len(by_class[c]), size=int(k), replace=False)]
    return [items[i] for i in picked]


def _read_answers(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read answers '{path}': {exc}") from exc
    if not rows or not {"case", "answer"} <= set(rows[0]):
        raise DataError(f"answers '{path}' need a header with columns case,answer")
    answers = {}
    for line, row in enumerate(rows, start=2):
        case, answer = (row.get("case") or "").strip(), (row.get("answer") or "").strip().lower()
        if answer not in ANSWERS:
            raise DataError(f"answers '{path}' row {line} (case '{case}'): answer {answer!r} is not one of {ANSWERS}")
        if case in answers:
            raise DataError(f"answers '{path}' row {line}: case '{case}' answered twice")
        answers[case] = answer
    return answers


def score_turing_test(answers_csv: str | os.PathLike, key_json: str | os.PathLike, seal: str | None = None) -> dict:
    """Score a reader's filled ``answers.csv`` against the sealed key.

    ``seal``: the path of ``key_sha256.txt`` (default: beside ``answers_csv``); when it exists, the key must match.

    Returns ``{"n", "accuracy", "synthetic_called_real", "real_called_real", "p_value_vs_chance", "per_class",
    "confusion"}``; proportions as ``{"value", "k", "n", "ci95"}`` (Clopper-Pearson).

    Raises:
        DataError: a missing or unreadable file, a key that does not match its seal, an answer that is not
            ``real``/``synthetic``, or cases missing from / unknown to the key (naming them).
    """
    from scipy.stats import binomtest

    answers_csv, key_json = Path(answers_csv), Path(key_json)
    for path in (answers_csv, key_json):
        if not path.is_file():
            raise DataError(f"Turing test: '{path}' does not exist")
    seal_path = Path(seal) if seal is not None else answers_csv.parent / SEAL_NAME
    if seal_path.is_file() and seal_path.read_text().strip() != _sha256(key_json):
        raise DataError(f"answer key '{key_json}' does not match its seal '{seal_path}': it was changed or is another")
    try:
        key = json.loads(key_json.read_text(encoding="utf-8"))
        truth = {c["case"]: c for c in key["cases"]}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"answer key '{key_json}' is not a Turing test key: {exc}") from exc
    answers = _read_answers(answers_csv)
    unknown = sorted(set(answers) - set(truth))
    missing = sorted(set(truth) - set(answers))
    if unknown:
        raise DataError(f"answers '{answers_csv}': case(s) {unknown[:5]} are not in the key")
    if missing:
        raise DataError(f"answers '{answers_csv}': {len(missing)} case(s) unanswered, e.g. {missing[:5]}")
    pairs = [(truth[c]["truth"], answers[c], truth[c].get("class")) for c in truth]
    correct = sum(t == a for t, a, _ in pairs)
    syn = [a for t, a, _ in pairs if t == "synthetic"]
    real = [a for t, a, _ in pairs if t == "real"]
    per_class = {}
    for name in sorted({cls for _, _, cls in pairs if cls is not None}):
        fooled = [a for t, a, cls in pairs if cls == name and t == "synthetic"]
        per_class[name] = {"synthetic_called_real": _proportion(sum(a == "real" for a in fooled), len(fooled))}
    n = len(pairs)
    return {
        "n": n,
        "accuracy": _proportion(correct, n),
        "p_value_vs_chance": float(binomtest(correct, n, 0.5).pvalue) if n else None,
        "synthetic_called_real": _proportion(sum(a == "real" for a in syn), len(syn)),
        "real_called_real": _proportion(sum(a == "real" for a in real), len(real)),
        "confusion": {
            t: {a: sum(1 for tt, aa, _ in pairs if tt == t and aa == a) for a in ANSWERS} for t in ("real", "synthetic")
        },
        "per_class": per_class,
    }


def _load_items(path: str) -> tuple[list[dict], list[str]]:
    from common.data.labelled_images import load_classification_dataset

    data = load_classification_dataset(path)
    return data["items"], data["class_names"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.protocol.turing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a shuffled reader set and its sealed answer key")
    w.add_argument("--real", required=True, help="real images: a datalist .json, a labels .csv or class folders")
    w.add_argument("--synthetic", required=True, help="synthetic images (e.g. the bundle's synthetic/datalist.json)")
    w.add_argument("--out", required=True, help="the reader's folder (PNGs, answers.csv, instructions.txt)")
    w.add_argument("--key", default=None, help="the key's folder, kept from the reader (default: <out>_key)")
    w.add_argument("--n_real", type=int, default=50)
    w.add_argument("--n_synthetic", type=int, default=50)
    w.add_argument("--a_min", type=float, default=-1000.0, help="window low end in the files' units (CT: HU)")
    w.add_argument("--a_max", type=float, default=400.0, help="window high end")
    w.add_argument("--display_size", type=int, default=128)
    w.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score", help="score a reader's answers.csv against the key")
    s.add_argument("--answers", required=True)
    s.add_argument("--key", required=True, help="answer_key.json")
    s.add_argument("--out", default=None, help="also write the scores as JSON here")
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            real, class_names = _load_items(args.real)
            synthetic, _ = _load_items(args.synthetic)
            paths = write_turing_test(
                real, synthetic, args.out, key_dir=args.key, n_real=args.n_real, n_synthetic=args.n_synthetic,
                a_min=args.a_min, a_max=args.a_max, class_names=class_names, display_size=args.display_size,
                seed=args.seed,
            )  # fmt: skip
            print(json.dumps(paths, indent=1))
        else:
            result = score_turing_test(args.answers, args.key)
            text = json.dumps(result, indent=1)
            if args.out:
                atomic_write_text(Path(args.out), text + "\n")
            print(text)
    except DataError as exc:
        print(f"synthaug: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
