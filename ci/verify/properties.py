"""The ``properties:infer`` and ``properties:train`` checks: MONAI's bundle workflow properties are present.

MONAI Label (and any ``monai.bundle.ConfigWorkflow`` user) loads inference.json through MONAI's property table for
``workflow_type="infer"`` (dataset, evaluator, inferer, network_def, ...), so a missing inference property FAILs.
MONAI's train properties describe a supervised ``SupervisedTrainer``, which a GAN trainer (no single inferer, two
networks) need not match, so a missing train property only WARNs. Presence is checked on the raw config: nothing
is instantiated, so the check neither builds datasets nor writes data.
"""

from __future__ import annotations

from typing import Any

from .base import Bundle, Report, quiet


def _presence_workflow_cls() -> type:
    """Build ``_PresenceWorkflow`` lazily: importing MONAI costs seconds and ``--help`` should not pay it."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.properties import BundlePropertyConfig

    class _PresenceWorkflow(ConfigWorkflow):
        """A ``ConfigWorkflow`` whose properties resolve to their raw config instead of being instantiated.

        MONAI's ``check_properties()`` tests ``hasattr(workflow, name)``, which parses the property: before
        ``initialize()`` that raises instead of reporting, and after it instantiates datasets and trainers
        (building loaders, writing phantom data into ``dataset_dir``) and stops at the first missing id with a
        KeyError. Presence of the config id is what the check is about, so only that is looked up; MONAI's own
        property tables and its optional-id consistency check are used unchanged.
        """

        def _get_property(self, name: str, property: dict) -> Any:
            prop_id = property[BundlePropertyConfig.ID]
            if prop_id not in self.parser:
                raise AttributeError(f"config id {prop_id!r} of property {name!r} is missing")
            return self.parser[prop_id]

    return _PresenceWorkflow


def check_properties(b: Bundle, r: Report) -> None:
    from monai.bundle.properties import BundlePropertyConfig

    for workflow_type, config, missing_status in (("infer", "inference.json", "FAIL"), ("train", "train.json", "WARN")):
        name = f"properties:{workflow_type}"
        if not b.config(config).is_file() or not b.meta_file.is_file():
            r.skip(name, f"{config} or metadata.json is missing")
            continue
        try:
            with quiet():
                workflow = _presence_workflow_cls()(
                    config_file=str(b.config(config)),
                    meta_file=str(b.meta_file),
                    logging_file=False,
                    workflow_type=workflow_type,
                )
                missing = workflow.check_properties() or []
        except Exception as e:
            r.add(missing_status, name, f"check_properties() raised {type(e).__name__}: {e}")
            continue
        if missing:
            ids = {n: str(workflow.properties[n].get(BundlePropertyConfig.ID, n)).replace("::", "#") for n in missing}
            listed = ", ".join(f"{n} ({i})" if i != n else n for n, i in ids.items())
            hint = (
                " (a GAN trainer need not fit MONAI's supervised train properties)" if workflow_type == "train" else ""
            )
            r.add(missing_status, name, f"{config} lacks required or misnamed properties: {listed}{hint}")
        else:
            r.ok(name, f"{config}: all required properties present")
