"""Synthesis quality and privacy audit of a synthetic image set: is it any good, and does it leak its training images?

Three image sets go in: T, the images the generator was trained on; R, held-out real images from the same source
that the generator never saw; S, synthetic images. Out come the two sections a bundle's ``report.json`` carries:

- ``synthesis``: Frechet distance, KID and precision/recall/density/coverage of S vs T in weight-free feature spaces
  (fixed random CNNs averaged over 3 seeds; optionally the project's own classifier), each beside the real-vs-real
  baseline R vs T at the same sample size, plus MS-SSIM diversity of S beside that of R;
- ``privacy``: nearest-training-image distances of S vs R (pixel and feature space), copy fraction, authenticity,
  membership-inference AUC, and ``flags`` that name any sign of memorisation.

Three ways in, one implementation (``run_audit``):

- Python: ``run_audit(train, real, synthetic, out_dir)`` with tensors ``(N, C, H, W[, D])`` in [-1, 1];
- bundle config: ``{"_target_": "common.audit.SynthesisAudit", "out_dir": "@output_dir"}`` then call it with the
  three tensors (or ``.from_files(...)`` with three folders / datalists);
- command line: ``python -m common.audit --train T --real R --synthetic S --out DIR``, each a folder of images
  (PNG/NIfTI/..., searched recursively) or a datalist JSON (``file.json#validation`` picks a section).

Outputs in ``out_dir``: ``audit.json`` (``{"synthesis": ..., "privacy": ...}``), ``nearest_pairs.png``,
``feature_pca.png``, ``nn_distance_hist.png`` and ``distances.npz`` (the raw nearest-neighbour distances).

Each section holds the headline numbers flat, ``"<metric>": value`` and ``"<metric>_real_baseline": value`` (what
a report table shows and what averages over folds), ``"details": {"<metric>": {"value", "ci95", "real_baseline",
"per_seed", ...}}`` with the uncertainty, and ``"setup"`` (sizes, settings, figures); ``privacy`` adds
``"memorization_suspected"`` and ``"flags"`` (reasons, empty when none). Metric names carry their space:
``frechet_distance_randcnn``, ``kid_classifier``, ``mia_auc_pixel``, ... (never "FID": not Inception features).

Modules: ``core`` (``run_audit``: tensors in, the two sections out), ``files`` (folders / datalists read and
normalised, ``audit_files``, ``audit_datalists``, ``load_classifier``, ``SynthesisAudit``), ``figures`` (the PNGs),
``cli`` (the command line). The names below are the package's public API.
"""

from common.audit.cli import main
from common.audit.core import MIN_IMAGES, SMALL_SAMPLE, run_audit
from common.audit.files import SynthesisAudit, audit_datalists, audit_files, load_classifier, load_image_set

__all__ = [
    "MIN_IMAGES",
    "SMALL_SAMPLE",
    "SynthesisAudit",
    "audit_datalists",
    "audit_files",
    "load_classifier",
    "load_image_set",
    "main",
    "run_audit",
]
