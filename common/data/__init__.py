"""The data layer: files on disk -> datalist -> MONAI transforms.

- :mod:`common.data.io`: ``read_image`` / ``write_image`` (the same reader as the training transforms);
- :mod:`common.data.datalist`: Decathlon-style JSON datalists;
- :mod:`common.data.labelled_images`: ``load_classification_dataset`` (phantom, datalist, CSV, LIDC, folders);
- :mod:`common.data.phantoms`: the embedded procedural data sets;
- :mod:`common.data.lidc`: LIDC-IDRI nodule VOIs -> 2-D ROI tasks;
- :mod:`common.data.synthetic`: generator output -> files + datalist;
- :mod:`common.data.transforms`: classic augmentation and the ROI classification chain.
"""

from common.data.augment import ClassicAugmentation
from common.data.datalist import read_datalist, write_datalist
from common.data.io import read_image, write_image
from common.data.labelled_images import load_classification_dataset, validate_images
from common.data.lidc import LIDC_MAPPINGS, LidcMapping, prepare_lidc_rois, register_lidc_mapping
from common.data.phantoms import LiverLesionPhantom, Phantom
from common.data.synthetic import write_synthetic_set
from common.data.transforms import roi_classification_transforms

__all__ = [
    "LIDC_MAPPINGS",
    "LidcMapping",
    "LiverLesionPhantom",
    "Phantom",
    "ClassicAugmentation",
    "load_classification_dataset",
    "prepare_lidc_rois",
    "read_datalist",
    "read_image",
    "register_lidc_mapping",
    "roi_classification_transforms",
    "validate_images",
    "write_datalist",
    "write_image",
    "write_synthetic_set",
]
