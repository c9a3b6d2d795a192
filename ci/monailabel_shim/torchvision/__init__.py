"""NOT torchvision: a stand-in that lets MONAI Label 0.8.5 import beside the CPU build of torch 2.13.0.

Why it exists: ``monailabel/transform/post.py`` (which holds ``Restored``, the post-transform every
``BundleInferTask`` appends) does ``from torchvision.utils import make_grid, save_image`` at import time. The
registry's only torchvision for torch 2.13.0 (0.28.0) is a CUDA build; beside the CPU build of torch its C++ ops do
not load and ``import torchvision`` stops with ``operator torchvision::nms does not exist``.

Scope: ``ci/monai_label_server.py`` puts this folder first on the ``PYTHONPATH`` of the MONAI Label server it starts,
and nothing else ever sees it (it is not a package of the project, nor installed). The two names exist only so that
the import succeeds; MONAI Label uses them only in ``DumpImagePrediction2Dd`` and the DeepEdit training handlers,
which a ``BundleInferTask`` never runs, and either raises if called. The version marks it as not a real torchvision,
so MONAI's version-checked ``optional_import("torchvision", ...)`` treats torchvision as absent.
"""

__version__ = "0.0.0+synthaug.shim"
