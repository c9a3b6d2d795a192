"""Ship a trained generator as a bundle's model: ``models/model.pt``, its quality report and provenance in metadata.

    python ci/ship_weights.py bundles/<name> --run RUN_DIR --dataset lidc_vois --licence "CC BY 3.0" \
        --command "python -m monai.bundle run training --config_file ..."

``RUN_DIR`` is the output_dir of a ``training`` run: it holds ``model.pt`` (the generator(s) with their network
sizes, see ``common.engines.model_file``) and ``quality.json`` (the audit against held-out real images). This copies
the model to ``models/model.pt`` (refusing one over 25 MB: those belong in ``large_files.yml``), the quality report
to ``docs/results/quality.json`` (the model card's numbers come from it), and writes into ``configs/metadata.json``
``eval_metrics`` (the quality figures beside their real-vs-real baselines) and ``synthaug_model`` (data set, licence,
command, G steps, CPU seconds, sha256 of the weights). Nothing is copied when a file is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

MAX_MB = 25
QUALITY_KEYS = (
    "precision", "precision_real_baseline", "recall", "recall_real_baseline", "density", "density_real_baseline",
    "coverage", "coverage_real_baseline", "frechet_ratio",
)  # fmt: skip


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def _half(model: Path, out: Path) -> None:
    """The model file with every float32 tensor stored as float16 (load_state_dict casts back to float32)."""
    import torch

    state = torch.load(model, map_location="cpu", weights_only=True)
    for name, sd in state.items():
        if name != "synthaug":
            state[name] = {k: v.half() if v.dtype == torch.float32 else v for k, v in sd.items()}
    state["synthaug"]["stored_as"] = "float16 (cast to float32 on loading)"
    torch.save(state, out)


def ship(bundle: Path, run: Path, dataset: str, licence: str, command: str, half: bool = False) -> dict:
    model, quality_file = run / "model.pt", run / "quality.json"
    for f in (model, quality_file):
        if not f.is_file():
            raise SystemExit(f"ship_weights: {f} is missing: run the bundle's training into {run} first")
    if half:
        _half(model, run / "model_fp16.pt")
        model = run / "model_fp16.pt"
    size_mb = model.stat().st_size / 2**20
    if size_mb > MAX_MB:
        raise SystemExit(f"ship_weights: {model} is {size_mb:.1f} MB (> {MAX_MB}): list it in large_files.yml")
    quality = json.loads(quality_file.read_text())
    (bundle / "models").mkdir(exist_ok=True)
    shutil.copyfile(model, bundle / "models" / "model.pt")
    results = bundle / "docs" / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(quality_file, results / "quality.json")
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["eval_metrics"] = {k: _round(quality.get(k)) for k in QUALITY_KEYS}
    training = quality.get("training", {})
    meta["synthaug_model"] = {
        "file": "models/model.pt",
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "size_mb": round(size_mb, 2),
        "dataset": dataset,
        "data_licence": licence,
        "command": command,
        "generator_steps": training.get("iterations"),
        "images_seen": training.get("images_seen"),
        "training_seconds": training.get("seconds"),
        "hardware": "CPU, one thread of a shared 2-core machine",
        "quality": "docs/results/quality.json: random-CNN features, held-out real images it never trained on",
        "n_train": quality.get("n_train"),
        "n_heldout": quality.get("n_heldout"),
        "stored_as": "float16 (cast to float32 on loading; the audit ran on float32)" if half else "float32",
    }
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")
    return meta["synthaug_model"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bundle")
    p.add_argument("--run", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--licence", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--half", action="store_true", help="store the weights as float16 (halves the file)")
    a = p.parse_args(argv)
    out = ship(Path(a.bundle), Path(a.run), a.dataset, a.licence, a.command, a.half)
    json.dump(out, sys.stdout, indent=1)
    print()
    return out


if __name__ == "__main__":
    main()
