"""Split a development set into "data" and "external test" folders, for the model cards' external-test examples.

Each card shows how far its cross-validated numbers travel: the protocol runs on one part (``--dataset_dir``) and
scores every downstream model once on the other (``--test_dir``), which no model, GAN or selection step ever saw.
The parts are made without copying images (symbolic links), in the layout each reader already accepts:

- ``lidc``: LIDC-IDRI VOIs (``image/``, ``nodule_mask/``, ``metadata.csv``) split by patient id: the patients whose
  ids sort in the last ``--fraction`` are the external set (a range of ids, as a later collection would be).
- ``isic``: an ISIC ``Train/<class>/`` folder split by a seeded draw of image ids (no patient id; an image filed
  under two classes keeps both copies on one side).
- ``brats``: BraTS case folders (from ``train/`` and ``validation/``) split by case id, the last ones external.
- ``medmnist``: a MedMNIST ``.npz``: its ``train`` split is the data, its ``val`` split becomes the ``test`` split
  (which the reader takes as the external set by default); written as a new ``.npz``.

    python ci/make_external_example.py lidc ../shared/data/lidc_vois /tmp/lidc_split --fraction 0.25
    -> /tmp/lidc_split/data and /tmp/lidc_split/external; prints the two override flags to use
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from pathlib import Path


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


def split_lidc(src: Path, out: Path, fraction: float) -> dict:
    with (src / "metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    patients = sorted({r["patient_id"] for r in rows})
    n_external = max(1, round(len(patients) * fraction))
    external = set(patients[-n_external:])
    for part, keep in (("data", lambda p: p not in external), ("external", lambda p: p in external)):
        chosen = [r for r in rows if keep(r["patient_id"])]
        root = out / part
        root.mkdir(parents=True, exist_ok=True)
        with (root / "metadata.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
        for r in chosen:
            for folder in ("image", "nodule_mask"):
                if (src / folder / r["voi_file"]).exists():
                    _link(src / folder / r["voi_file"], root / folder / r["voi_file"])
    first = sorted(external)[0]
    return {"rule": f"patients with ids from {first} on ({n_external} of {len(patients)}) are external"}


def split_isic(src: Path, out: Path, fraction: float, seed: int) -> dict:
    train = src / "Train" if (src / "Train").is_dir() else src
    files = [f for d in sorted(p for p in train.iterdir() if p.is_dir()) for f in sorted(d.iterdir()) if f.is_file()]
    # by image id, not by file: a set may file one image under two classes (isic9 does, 137 times), and both
    # copies must fall on the same side
    ids = sorted({f.stem for f in files})
    random.Random(seed).shuffle(ids)
    external = set(ids[: max(1, round(len(ids) * fraction))])
    for f in files:
        _link(f, out / ("external" if f.stem in external else "data") / f.parent.name / f.name)
    shared = len(files) - len({f.stem for f in files})
    return {
        "rule": f"a seeded draw (seed {seed}) of {fraction:.0%} of the image ids is external ({len(external)} ids; "
        f"{shared} files repeat an id under another class and go with it)"
    }


def split_brats(src: Path, out: Path, n_external: int) -> dict:
    cases = sorted(p for sub in ("train", "validation") if (src / sub).is_dir() for p in (src / sub).iterdir())
    cases = sorted(cases, key=lambda p: p.name)
    external = {p.name for p in cases[-n_external:]}
    for case in cases:
        part = "external" if case.name in external else "data"
        for f in case.iterdir():
            _link(f, out / part / case.name / f.name)
    return {"rule": f"cases {sorted(external)} are external ({n_external} of {len(cases)})"}


def split_medmnist(src: Path, out: Path) -> dict:
    import numpy as np

    npz = src if src.suffix == ".npz" else next(src.glob("*.npz"))
    arrays = np.load(npz)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / npz.name, train_images=arrays["train_images"], train_labels=arrays["train_labels"],
        test_images=arrays["val_images"], test_labels=arrays["val_labels"],
    )  # fmt: skip
    return {"rule": "the train split is the data; the val split is the external test set", "file": str(out / npz.name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("lidc", "isic", "brats", "medmnist"))
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fraction", type=float, default=0.25, help="share of patients / images made external")
    parser.add_argument("--n_external", type=int, default=1, help="brats: cases made external")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.kind == "lidc":
        info = split_lidc(args.source, args.out, args.fraction)
    elif args.kind == "isic":
        info = split_isic(args.source, args.out, args.fraction, args.seed)
    elif args.kind == "brats":
        info = split_brats(args.source, args.out, args.n_external)
    else:
        info = split_medmnist(args.source, args.out)
        print(info["rule"])
        print(f"--dataset_dir {info['file']}")
        return
    print(info["rule"])
    print(f"--dataset_dir {args.out / 'data'} --test_dir {args.out / 'external'}")


if __name__ == "__main__":
    main()
