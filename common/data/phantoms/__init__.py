"""Procedural ("phantom") data sets: the embedded defaults that every bundle runs on out of the box.

Configs name them directly, e.g. ``{"_target_": "common.data.phantoms.LiverLesionPhantom", "seed": 0}``, and pass
the instance to ``common.data.load_classification_dataset(..., phantom=..., phantom_dir=...)``.
"""

from common.data.phantoms.base import Phantom
from common.data.phantoms.brain import BrainTumourPhantom
from common.data.phantoms.ct_patches import CTPatchPhantom
from common.data.phantoms.dermoscopy import DermoscopyPhantom
from common.data.phantoms.liver import LiverLesionPhantom
from common.data.phantoms.lung import LungSignPhantom

#: Phantoms by name, for code that picks one from a string.
PHANTOMS: dict[str, type[Phantom]] = {LiverLesionPhantom.name: LiverLesionPhantom}
PHANTOMS[LungSignPhantom.name] = LungSignPhantom
PHANTOMS[DermoscopyPhantom.name] = DermoscopyPhantom
PHANTOMS[BrainTumourPhantom.name] = BrainTumourPhantom

__all__ = [
    "PHANTOMS",
    "BrainTumourPhantom",
    "CTPatchPhantom",
    "DermoscopyPhantom",
    "LiverLesionPhantom",
    "LungSignPhantom",
    "Phantom",
]
