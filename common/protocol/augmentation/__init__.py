"""The papers' classification protocol (Frid-Adar 2018, He 2019, MelanoGANs): does adding synthetic images to a
classifier's training set help? k patient-separated folds x arms (real images, classic augmentation, synthetic
images, ...) -> report.

- :mod:`~common.protocol.augmentation.protocol`: ``ClassificationProtocol``, the protocol's steps (splits; per fold:
  synthetic set, classifiers, audit; report; export of the best classifier);
- :mod:`~common.protocol.augmentation.arms`: ``ARMS``, what each arm trains on, and its training set in a fold;
- :mod:`~common.protocol.augmentation.synthetic_sets`: ``FoldSynthesis``, a fold's GANs and synthetic set;
- :mod:`~common.protocol.augmentation.fold_runner`: ``FoldRunner``, a fold's classifier per task x arm (tasks,
  fine-tuning, equal steps, the external test set);
- :mod:`~common.protocol.augmentation.report_sections`: the report from the folds' scores.

The segmentation counterpart is ``common.protocol.segmentation``.
"""

from common.protocol.augmentation.arms import ARMS, oversample
from common.protocol.augmentation.protocol import ClassificationProtocol

__all__ = ["ARMS", "ClassificationProtocol", "oversample"]
