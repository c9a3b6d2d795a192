"""Command line: ``python -m common.audit --train T --real R --synthetic S --out DIR [options]``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from common.audit.files import audit_files, load_classifier

__all__ = ["main"]


def _summary(result: dict) -> str:
    lines = []
    for section in ("synthesis", "privacy"):
        lines.append(f"[{section}]")
        for key, entry in result[section]["details"].items():
            if entry.get("value") is not None:
                base_txt = ""
                if isinstance(entry.get("real_baseline"), (int, float)):
                    base_txt = f"   (real baseline {entry['real_baseline']:.4g})"
                elif isinstance(entry.get("ideal"), (int, float)):
                    base_txt = f"   (ideal {entry['ideal']:.4g})"
                lines.append(f"  {key:34s} {entry['value']:.4g}{base_txt}")
    flags = result["privacy"].get("flags") or []
    lines.append("memorisation flags: " + ("; ".join(flags) if flags else "none"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``python -m common.audit --train T --real R --synthetic S --out DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m common.audit",
        description="Synthesis quality and privacy audit: writes DIR/audit.json ({synthesis, privacy}) and figures.",
    )
    parser.add_argument("--train", required=True, help="images the generator was trained on: folder or datalist JSON")
    parser.add_argument("--real", required=True, help="held-out real images (never seen by the generator)")
    parser.add_argument("--synthetic", required=True, help="synthetic images: folder or datalist JSON")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--features", default="randcnn", help="comma-separated: randcnn, classifier")
    parser.add_argument("--classifier", default=None, help="classifier weights (state dict / Ignite checkpoint)")
    parser.add_argument("--classifier_def", default=None, help="network config: JSON string or config file[#id]")
    parser.add_argument("--classifier_layer", default=None, help="feature layer name (default: input of last Linear)")
    parser.add_argument("--max_images", type=int, default=1000, help="cap per set (seeded subset); 0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intensity", default="auto", choices=["auto", "uint8", "percentile", "per_image", "none"])
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--n_resamples", type=int, default=1000, help="bootstrap resamples for CIs (0: none)")
    parser.add_argument("--no_figures", action="store_true", help="skip the PNG figures")
    args = parser.parse_args(argv)

    features = [f.strip() for f in args.features.split(",") if f.strip()]
    classifier = None
    if args.classifier is not None and args.classifier_def is None:
        parser.error("--classifier needs --classifier_def (the network config): layers are read with forward hooks")
    if args.classifier is not None:
        classifier = load_classifier(args.classifier, args.classifier_def, args.device)
        if "classifier" not in features:
            features.append("classifier")
    start = time.perf_counter()
    result = audit_files(
        args.train,
        args.real,
        args.synthetic,
        args.out,
        intensity=args.intensity,
        max_images=args.max_images or None,
        seed=args.seed,
        features=features,
        classifier=classifier,
        classifier_layer=args.classifier_layer,
        n_resamples=args.n_resamples,
        device=args.device,
        figures=not args.no_figures,
    )
    print(_summary(result))
    print(f"wrote {Path(args.out) / 'audit.json'} in {time.perf_counter() - start:.1f} s")
    return result
