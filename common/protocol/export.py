"""Export the downstream model of a finished protocol: the one a user deploys (MONAI Label, a collaborator).

The arm and fold are chosen by the *validation* score each arm recorded while training (``result.json``); the test
folds played no part, so the exported model is not selected on the numbers the report gives.

``export_best_model`` copies the weights (``classifier.pt`` / ``segmenter.pt`` + a json record of the choice), which the
GAN bundle's own ``classify.json`` / ``segment.json`` load. ``write_downstream_bundle`` turns the same choice into a
self-contained MONAI bundle folder that MONAI Label's ``BundleInferTask`` loads as it is:
``configs/inference.json`` (derived from the GAN bundle's classify/segment config, with the evaluation's sizes),
``configs/metadata.json`` (``inputs.image`` -> ``outputs.pred``, label names, the selection and the arm's test
metrics), ``configs/logging.conf``, ``models/model.pt`` (and ``models/class_names.json`` for a classifier),
``docs/README.md`` (a generated model card), ``LICENSE``, ``docs/data_license.txt`` and a copy of ``common``
(``common.bundle_files``), so that it runs without this repository.
``export_downstream`` does both: the one helper every protocol calls.

No code from data. MONAI's ``ConfigParser`` runs a string that starts with ``$``, resolves one that starts with ``@``
and expands one that starts with ``%``, and ``monai.bundle run`` reads ``metadata.json`` into the same parser (under
``_meta_``; ``ConfigWorkflow.channel_def`` evaluates the output's ``channel_def``). So a class folder named
``$__import__('os').system(...)`` must never be written as a config value. Hence:

- ``configs/inference.json`` holds no string from data: the class names live in ``models/class_names.json``, a
  plain JSON list that no config parser reads, and ``class_names`` in the config is an expression of ours that loads
  it (``json.loads``), so the names come back as the literal strings;
- ``configs/metadata.json`` (label names for MONAI Label, data set names, paths) goes through ``parser_inert``: a
  string that starts with ``$``, ``@`` or ``%`` is written quoted (``'$...'``), and so is a dict key that is one of
  the parser's special keys (``_target_``...), so the parser reads every value as text. (The parser still rewrites
  ``#`` to ``::`` inside text; that changes no meaning.) The exact names are in ``models/class_names.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_NAMES_FILE",
    "DOWNSTREAM_KINDS",
    "GENERAL_SCHEMA_URL",
    "export_best_model",
    "export_downstream",
    "parser_inert",
    "write_downstream_bundle",
]

#: where a downstream classification bundle keeps its class names (relative to the bundle root): a data file that no
#: config parser reads, outside configs/ (tools parse every configs/*.json as a config)
CLASS_NAMES_FILE = "models/class_names.json"
#: the official MONAI metadata schema of a downstream (image-input) model; the GAN bundles' generator schema requires
#: a latent input, so an exported classifier/segmenter does not inherit its source bundle's ``schema``
GENERAL_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
#: how MONAI's ConfigParser treats a string that starts with: "$" an expression (run), "@" a reference, "%" a macro
_PARSER_PREFIXES = ("$", "@", "%")
#: dict keys with a meaning to ConfigParser (``_target_`` instantiates) or to merging several files ("+" prefix)
_PARSER_KEYS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")


def _parser_special(text: str, key: bool = False) -> bool:
    if text.startswith(_PARSER_PREFIXES):
        return True
    return key and (text in _PARSER_KEYS or text.startswith("+") or (text.startswith("_") and text.endswith("_")))


def parser_inert(value):
    """``value`` (JSON-like) with every string MONAI's ConfigParser would act on made plain text: a value that
    starts with ``$``, ``@`` or ``%``, or a dict key the parser treats specially (``_target_``, ``_x_``, ``+x``), is
    quoted (``'$x'``). For metadata that carries strings from data (label names, data set names, paths)."""
    if isinstance(value, str):
        return f"'{value}'" if _parser_special(value) else value
    if isinstance(value, dict):
        return {
            (f"'{k}'" if isinstance(k, str) and _parser_special(k, key=True) else k): parser_inert(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [parser_inert(v) for v in value]
    return value


def _no_parser_strings(value, what: str) -> None:
    """Refuse a string the parser would act on where only plain values belong (the evaluation's sizes, the name)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and _parser_special(k, key=True):
                raise ValueError(f"{what}: key {k!r} has a meaning to MONAI's config parser; give plain values")
            _no_parser_strings(v, f"{what}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _no_parser_strings(v, what)
    elif isinstance(value, str) and _parser_special(value):
        raise ValueError(f"{what}: {value!r} would be evaluated by MONAI's config parser; give a plain value")


def export_best_model(
    candidates: Iterable[tuple[str, int, Path]], metric_key: str, target: str | os.PathLike, **info
) -> dict:
    """Copy the ``best_model.pt`` beside the ``result.json`` with the highest ``metric_key`` to ``target``.

    Args:
        candidates: ``(arm, fold, result.json path)``; missing files are skipped.
        metric_key: the validation score in ``result.json`` (e.g. ``best_val_dice_mean``).
        target: where the weights go; ``<target stem>.json`` records the choice (plus ``info``).
    """
    best = None
    for arm, fold, result in candidates:
        if not Path(result).is_file():
            continue
        score = json.loads(Path(result).read_text()).get(metric_key)
        if score is None:
            continue
        if best is None or score > best[metric_key]:
            best = {"arm": arm, "fold": fold, metric_key: score, "model": str(Path(result).parent / "best_model.pt")}
    if best is None:
        raise FileNotFoundError(f"no trained model with '{metric_key}' among the candidates: run the evaluation first")
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.copyfile(best["model"], tmp)
    os.replace(tmp, target)
    record = {**best, **info, "exported": str(target), "selected_on": f"validation {metric_key}"}
    tmp = target.with_suffix(f".json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, target.with_suffix(".json"))
    logger.info(f"exported the '{best['arm']}' model of fold {best['fold']} to {target}")
    return record


# ----------------------------------------------------------------------------------------------------------------
# the downstream model as a MONAI bundle folder

#: what a downstream bundle is; MONAI Label infers the task type from the folder name ("classification" or
#: "segmentation" in it), so the default folder name ``<source bundle>_<kind>`` carries it
DOWNSTREAM_KINDS = ("classification", "segmentation")
#: ids of inference.json that MONAI Label's BundleInferTask (or ``monai.bundle run``) reads
_TEMPLATE_KEYS = ("bundle_name", "bundle_root", "network_def", "preprocessing", "inferer", "postprocessing", "run")


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> dict:
    from common.errors import DataError

    if not path.is_file():
        raise DataError(f"{what} '{path}' not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{what} '{path}' is not valid JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise DataError(f"{what} '{path}' must be a JSON object")
    return content


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _inference_config(template: dict, template_path: Path, name: str, kind: str, labels, config: dict) -> dict:
    """The template (classify.json / segment.json) with the new name, paths inside the new bundle root, the
    evaluation's sizes (``config``) and the class names read from ``CLASS_NAMES_FILE`` (never written into it)."""
    _no_parser_strings(config, "downstream config")
    _no_parser_strings(name, "downstream bundle name")
    missing = [k for k in _TEMPLATE_KEYS if k not in template]
    if missing:
        raise ValueError(f"downstream template '{template_path}' lacks key(s) {missing} that MONAI Label needs")
    unknown = [k for k in config if k not in template]
    if unknown:
        raise ValueError(f"downstream config key(s) {unknown} are not ids of the template '{template_path}'")
    out = dict(template)
    out["_comment"] = (
        f"Downstream {kind} bundle exported by an evaluation of the GAN bundle (see configs/metadata.json "
        "'synthaug_export' and docs/README.md). MONAI Label (BundleInferTask) reads network_def, preprocessing, "
        "inferer and postprocessing; 'python -m monai.bundle run --config_file configs/inference.json --dataset_dir "
        "DIR' runs the model over DIR in any layout the training reader accepts, or over images without labels "
        "(common.engines.prediction.read_prediction_set), and writes predictions.csv (per-class probabilities) and, "
        "for labelled input, metrics.json (95 % CIs by a bootstrap over patients) to prediction_dir."
    )
    out.update(config)
    out["bundle_name"] = name
    out["output_dir"] = "$@bundle_root + '/runs'"
    out["dataset_dir"] = "$@bundle_root + '/data'"
    out["ckpt_path"] = "$@bundle_root + '/models/model.pt'"
    if kind == "classification" and "class_names" in out:
        # the names come from data (class folders): read from a data file at run time, never parsed as config
        read = f"pathlib.Path(@bundle_root, '{CLASS_NAMES_FILE}').read_text(encoding='utf-8')"
        out["class_names"] = f"$json.loads({read})"
        imports = list(out.get("imports", []))
        out["imports"] = imports + [i for i in ("$import json", "$import pathlib") if i not in imports]
    return out


def _label_names(labels: Sequence[str] | Mapping[int, str]) -> dict[int, str]:
    """``{value: name}`` of a model's answer: a mapping as given (a label map whose values are not 0..n-1, such as
    BraTS's 0, 1, 2, 4), a sequence by position (class index, channel)."""
    if isinstance(labels, Mapping):
        return {int(v): str(n) for v, n in labels.items()}
    return {i: str(n) for i, n in enumerate(labels)}


def _metadata(
    source_meta: dict,
    name: str,
    kind: str,
    image: dict,
    labels,
    output: dict | None,
    selection: dict,
    source: str,
    channels: Sequence[str] | None = None,
) -> dict:
    names = _label_names(labels)
    # MONAI Label (BundleInferTask) takes its label names and ids from outputs.pred.channel_def: they must be the
    # values of the answer after postprocessing, which it writes as the label (or scores, for a classifier)
    channel_def = {str(v): n for v, n in names.items()}
    image = dict(image)
    data_type = image.pop("data_type", source_meta.get("data_type", "nifti"))
    image_spec = {
        "type": "image",
        "format": "magnitude",
        "modality": "none",
        "num_channels": 1,
        "spatial_shape": [],
        "dtype": "float32",
        "value_range": [-1, 1],
        "is_patch_data": False,
        "channel_def": {"0": "image"},
    } | image
    if kind == "classification":
        pred = {
            "type": "probabilities",
            "format": "classes",
            "modality": "none",
            "num_channels": len(names),
            "spatial_shape": [],
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": False,
        }
    else:
        pred = {
            "type": "image",
            "format": "segmentation",
            "modality": "none",
            "num_channels": len(channels) if channels else len(names),
            "spatial_shape": list(image_spec["spatial_shape"]),
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": image_spec["is_patch_data"],
        }
    pred = pred | dict(output or {}) | {"channel_def": channel_def}
    data_format = {"inputs": {"image": image_spec}, "outputs": {"pred": pred}}
    values = ", ".join(f"{v} {n}" for v, n in names.items())
    pred_classes = values
    if channels:
        # the network's channels are not the answer's values: postprocessing makes a label map of them
        data_format["post_processed_outputs"] = {
            "pred": {
                "type": "image",
                "format": "labels",
                "modality": "none",
                "num_channels": 1,
                "spatial_shape": [],
                "dtype": "int16",
                "value_range": [min(names), max(names)],
                "is_patch_data": False,
                "channel_def": channel_def,
            }
        }
        pred_classes = (
            f"network output channels: {', '.join(f'{i} {c}' for i, c in enumerate(channels))}; after "
            f"postprocessing (configs/inference.json) one label map of values {values}"
        )
    version = source_meta.get("version", "0.0.0")
    arm, fold = selection["arm"], selection["fold"]
    what = "classifier" if kind == "classification" else "segmenter"
    metrics = selection.get("test_metrics", {})
    meta = {
        # the general schema: a downstream model's input is an image (the GAN bundle's generator schema wants a latent)
        "schema": GENERAL_SCHEMA_URL,
        "version": version,
        "changelog": {
            version: f"exported by {source} {version}: the '{arm}' {what} of fold {fold}, chosen on "
            f"{selection['selected_on']} ({_fmt(selection.get('validation_score'))})"
        },
        "monai_version": source_meta.get("monai_version"),
        "pytorch_version": source_meta.get("pytorch_version"),
        "numpy_version": source_meta.get("numpy_version"),
        "required_packages_version": dict(source_meta.get("required_packages_version", {})),
        "supported_apps": {"monai-label": "0.8.5"},
        "name": f"{what.capitalize()} exported from {source_meta.get('name', source)}",
        "task": f"{kind.capitalize()}: {', '.join(n for n in names.values() if n.lower() != 'background')}",
        "description": (
            f"The downstream {what} of the {source} evaluation (arm '{arm}', fold {fold}), trained on "
            f"{selection.get('dataset', '?')}. Chosen on {selection['selected_on']}; the test folds played no part "
            "in the choice. See docs/README.md for its test metrics beside the paper's and its caveats."
        ),
        "authors": source_meta.get("authors", "synthaug contributors"),
        "copyright": source_meta.get("copyright", "Copyright (c) synthaug contributors"),
        "data_source": source_meta.get("data_source", "?"),
        "data_type": data_type,
        "image_classes": (
            f"{image_spec['num_channels']} channel(s) {image_spec['modality']} image, "
            f"{'x'.join(map(str, image_spec['spatial_shape'])) or 'any size'} at the network's input "
            "(configs/inference.json 'preprocessing' loads and scales it)"
        ),
        "label_classes": values,
        "pred_classes": pred_classes,
        "eval_metrics": {m: s.get("mean") for m, s in metrics.items() if isinstance(s, dict)},
        "intended_use": source_meta.get("intended_use", "Research only; not for clinical use"),
        "references": list(source_meta.get("references", [])),
        "network_data_format": data_format,
        "synthaug_export": selection,
    }
    # label names, data set names and paths come from data; monai.bundle run reads this file into its parser
    return parser_inert({k: v for k, v in meta.items() if v is not None})


#: what the exported classifier reads and writes, for its model card
_PREDICTION_NOTES = [
    "`DIR` is in any layout the training reader accepts, prepared by the same code as in training: a datalist"
    " (`datalist.json`), `labels.csv`, one sub-folder per class, LIDC VOIs with their metadata table (each nodule's"
    " ROI: largest-area slice, crop, resize), a MedMNIST `.npz`, an archive's `Test/` folder; or images without"
    " labels (one image file, a datalist without labels, a folder of images, VOIs without a metadata table);"
    " `prediction_set` in configs/inference.json says how it is read.",
    "",
    "It writes `runs/predictions/predictions.csv` (file, patient, predicted class and index, `prob_<class>` per class,"
    " and the true label when the input has labels) and, for labelled input, `runs/predictions/metrics.json`: accuracy,"
    " balanced accuracy, sensitivity, specificity and AUC, each with a 95 % CI by a bootstrap over patients (one log"
    " line sums them up). A file or folder it cannot read stops the run with one line naming it.",
    "",
]


def _model_card(meta: dict, kind: str) -> str:
    sel = meta["synthaug_export"]
    name = sel["bundle_name"]
    paper = sel.get("paper_reference", {})
    rows = [
        f"| {m} | {_fmt(s.get('mean'))} | {_fmt(s.get('std'))} | "
        f"[{_fmt((s.get('ci95') or [None, None])[0])}, {_fmt((s.get('ci95') or [None, None])[1])}] | "
        f"{_fmt(paper.get(m)) if m in paper else '-'} |"
        for m, s in sel.get("test_metrics", {}).items()
        if isinstance(s, dict)
    ]
    phantom = "phantom" in str(sel.get("dataset", "")).lower()
    lines = [
        f"# {meta['name']}",
        "",
        f"A MONAI bundle generated by `{sel['source_bundle']}` {sel['source_version']} "
        "(`common.protocol.export.write_downstream_bundle`); do not edit it by hand, re-run the evaluation instead.",
        "",
        "## What it is",
        "",
        f"- Task: {meta['task']}. Input `image` ({meta['data_type']}), output `pred`: {meta['pred_classes']}.",
        f"- Paper: {sel.get('paper') or '-'}.",
        f"- Trained on: {sel.get('dataset', '?')} (`{sel.get('dataset_dir') or '-'}`), arm `{sel['arm']}` "
        f"of the evaluation, fold {sel['fold']} of {sel.get('folds', '?')}.",
        f"- Chosen how: the highest {sel['selected_on']} ({_fmt(sel.get('validation_score'))}) among "
        f"{sel.get('choice_among') or 'the arms and folds'}; test patients played no part in the choice.",
    ]
    if sel.get("privacy"):
        lines.append(f"- Privacy of the training data behind it: {json.dumps(sel['privacy'])}.")
    lines += [
        "",
        f"## Test metrics of the arm `{sel['arm']}` (mean over folds, 95 % CI), beside the paper's",
        "",
        "These describe the arm (a fresh model per fold, each tested once on its fold's held-out patients), of which"
        " this model is one fold's instance.",
        "",
        "| metric | mean | std | 95 % CI | paper |",
        "|---|---|---|---|---|",
        *(rows or ["| - | - | - | - | - |"]),
        "",
        "## Intended use and caveats",
        "",
        f"- {meta.get('intended_use', 'Research only; not for clinical use')}.",
    ]
    if phantom:
        lines.append(
            f"- **Demonstration only**: trained on the procedural phantom of `{sel['source_bundle']}`, not on patient"
            " images. It shows that the pipeline produces a deployable model; it says nothing about real images."
        )
    lines += [
        "- The numbers come from the evaluation's own patient-separated folds; a new site or scanner needs its own"
        " validation before any use.",
        "- Input must be prepared like the training data (see `preprocessing` in configs/inference.json).",
        "- Data licence: docs/data_license.txt (the training data's); code and weights: LICENSE.",
        "",
        "## Use",
        "",
        "From this folder (it carries its own copy of the `common` package; `pip install monai torch"
        " pytorch-ignite nibabel itk pillow fire` is all it needs):",
        "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json --dataset_dir DIR",
        "```",
        "",
        *(_PREDICTION_NOTES if kind == "classification" else []),
        f"MONAI Label (monaibundle app): copy this folder into the app's `model/` folder and start the server with "
        f"`--conf models {name}`. Check it loads as MONAI Label loads it: "
        f"`python ci/check_monai_label.py {name}` (from a synthaug checkout).",
        "",
    ]
    return "\n".join(lines)


def write_downstream_bundle(
    record: dict,
    target: str | os.PathLike,
    *,
    template: str | os.PathLike,
    source_root: str | os.PathLike,
    kind: str,
    labels: Sequence[str] | Mapping[int, str],
    image: dict,
    output: dict | None = None,
    channels: Sequence[str] | None = None,
    config: dict | None = None,
    report: dict | None = None,
) -> Path:
    """Write the model chosen in ``record`` (see ``export_best_model``) as a MONAI bundle folder ``target``.

    The folder is built in a temporary sibling and renamed into place, so a killed export leaves either the old
    folder or the new one; a re-run replaces it.

    Args:
        record: ``arm``, ``fold``, ``model`` (weights file), ``selected_on`` and the validation score.
        template: the GAN bundle's ``classify.json`` / ``segment.json``: becomes ``configs/inference.json`` with
            ``bundle_name``, ``output_dir``/``dataset_dir``/``ckpt_path`` inside the new folder, ``config`` applied.
        source_root: the GAN bundle folder (its metadata, ``LICENSE``, ``docs/data_license.txt``, ``logging.conf``).
        kind: ``"classification"`` or ``"segmentation"``.
        labels: the names of the values the model answers with after its postprocessing: class names in class
            index order (classification), or channel names (a segmenter whose channels are its labels), or
            ``{value: name}`` for a label map whose values are not 0..n-1 (BraTS: 0, 1, 2, 4). They become
            ``outputs.pred.channel_def``, where MONAI Label reads its label names and ids. They may come from data
            (class folders): see the module docstring for where they are written, and how.
        image: ``network_data_format.inputs.image`` of the network (num_channels, spatial_shape, modality,
            format, channel_def ...) plus ``data_type`` (``"nifti"``, ``"png"``) of the files it reads.
        output: overrides of ``outputs.pred`` (e.g. ``is_patch_data``).
        channels: the names of the network's output channels where postprocessing turns them into a label map of
            ``labels`` (the brain segmenter: TC, WT, ET -> BraTS labels): ``outputs.pred.num_channels`` counts them,
            ``post_processed_outputs.pred`` describes the label map, ``pred_classes`` says both.
        config: template ids -> the values the evaluation used (sizes, channels, windows): every key must be an id
            of the template, so a typo fails here rather than as a shape mismatch in MONAI Label.
        report: the evaluation's ``report.json``: the arm's test metrics and the paper's numbers go into the
            metadata and the model card.
    """
    if kind not in DOWNSTREAM_KINDS:
        raise ValueError(f"kind must be one of {DOWNSTREAM_KINDS}, got {kind!r}")
    target, template, source_root = Path(target), Path(template), Path(source_root)
    source_meta = _read_json(source_root / "configs" / "metadata.json", "source bundle metadata")
    inference = _inference_config(
        _read_json(template, "downstream template"), template, target.name, kind, labels, dict(config or {})
    )
    report = report or {}
    arm = record["arm"]
    arm_summary = report.get("arms", {}).get(arm, {})
    metric_key = next((k for k in record if k.startswith("best_val_")), None)
    selection = {
        "source_bundle": source_root.resolve().name,
        "source_version": source_meta.get("version"),
        "paper": report.get("paper", ""),
        "dataset": report.get("dataset", "?"),
        "dataset_dir": report.get("dataset_dir"),
        "folds": report.get("folds"),
        "arm": arm,
        "fold": record["fold"],
        "selected_on": record.get("selected_on", f"validation {metric_key}"),
        "validation_score": record.get(metric_key) if metric_key else None,
        "choice_among": record.get("choice_among"),
        "test_metrics": arm_summary.get("metrics", {}),
        "paper_reference": report.get("paper_reference", {}).get(arm, {}),
        "bundle_name": target.name,
    }
    selection |= {k: record[k] for k in ("choice", "privacy") if record.get(k) is not None}
    meta = _metadata(source_meta, target.name, kind, image, labels, output, selection, source_root.name, channels)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "configs").mkdir(parents=True)
    (tmp / "models").mkdir()
    (tmp / "docs").mkdir()
    (tmp / "configs" / "inference.json").write_text(json.dumps(inference, indent=4) + "\n")
    (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
    if kind == "classification":
        (tmp / CLASS_NAMES_FILE).write_text(json.dumps([str(n) for n in labels], indent=1) + "\n", encoding="utf-8")
    shutil.copyfile(source_root / "configs" / "logging.conf", tmp / "configs" / "logging.conf")
    shutil.copyfile(record["model"], tmp / "models" / "model.pt")
    shutil.copyfile(source_root / "LICENSE", tmp / "LICENSE")
    shutil.copyfile(source_root / "docs" / "data_license.txt", tmp / "docs" / "data_license.txt")
    (tmp / "docs" / "README.md").write_text(_model_card(meta, kind))
    from common.bundle_files import copy_common_package

    copy_common_package(tmp / "common")
    # swap in: the old folder (a previous export) moves aside first, as a directory cannot be replaced in one step
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    logger.info(f"downstream {kind} bundle written to {target}")
    return target


def export_downstream(
    candidates: Iterable[tuple[str, int, Path]],
    metric_key: str,
    target: str | os.PathLike,
    *,
    kind: str,
    labels: Sequence[str],
    report_file: str | os.PathLike | None = None,
    annotate: Callable[[dict], dict] | None = None,
    downstream: dict | None = None,
    **info,
) -> dict:
    """``export_best_model``, then (with ``downstream``) ``write_downstream_bundle`` of the same choice.

    Args:
        candidates, metric_key, target, info: as for ``export_best_model``.
        kind, labels: see ``write_downstream_bundle``.
        report_file: the evaluation's ``report.json`` (test metrics for the metadata and the model card).
        annotate: ``record -> extra fields`` (e.g. the epsilon of a DP arm), added to the record before writing.
        downstream: ``template``, ``source_root``, ``image`` (required), ``output``, ``config`` and ``name`` (the
            folder's name, default ``<source bundle>_<kind>``, written beside ``target``); None: weights only.
    """
    target = Path(target)
    record = export_best_model(candidates, metric_key, target, **info)
    if annotate is not None:
        record |= annotate(record)
    if downstream:
        downstream = {k: v for k, v in downstream.items() if not k.startswith("_")}  # "_comment" in a config
        name = downstream.pop("name", None) or f"{Path(downstream['source_root']).resolve().name}_{kind}"
        report = None
        if report_file is not None and Path(report_file).is_file():
            report = json.loads(Path(report_file).read_text())
        folder = write_downstream_bundle(
            record, target.parent / name, kind=kind, labels=labels, report=report, **downstream
        )
        record["downstream_bundle"] = str(folder)
    _atomic_text(target.with_suffix(".json"), json.dumps(record, indent=1))
    return record
