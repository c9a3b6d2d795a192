"""Generators, discriminators and classifiers of the reproduced papers, built from MONAI blocks.

Frid-Adar et al. 2018 (``liver_lesion_gan``): ``DCGANGenerator`` / ``DCGANDiscriminator``, their ACGAN variants,
and the downstream classifier ``FridAdarCNN`` (``LesionClassifier``: its old name, kept as an alias);
``weights_init_dcgan`` is the DCGAN N(0, 0.02) initialisation.
"""

from common.networks.classifier import FridAdarCNN, LesionClassifier
from common.networks.dcgan import (
    ACGANDiscriminator,
    ACGANGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    stride2_padding,
)
from common.networks.init import NORM_CHOICES, group_count, resolve_norm, weights_init_dcgan
from common.networks.lapgan import (
    LAPGANGenerator,
    LaplacianStageGenerator,
    MultiScaleDiscriminator,
    PyramidGenerator,
)

__all__ = [
    "NORM_CHOICES",
    "ACGANDiscriminator",
    "ACGANGenerator",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FridAdarCNN",
    "LAPGANGenerator",
    "LaplacianStageGenerator",
    "LesionClassifier",
    "MultiScaleDiscriminator",
    "PyramidGenerator",
    "group_count",
    "resolve_norm",
    "stride2_padding",
    "weights_init_dcgan",
]
