"""synthaug common: the shared pieces that the bundles' configs name with ``"_target_": "common...."``.

Sub-packages follow the one-way data flow of the project (see README):
``data`` (files -> datalist -> transforms) -> ``engines`` (GAN / classifier training) -> ``networks``/``losses``
-> ``protocol`` (k folds x arms -> report), with ``metrics`` and ``privacy`` used by the protocol and the audit.
"""

from common import tracking  # light (no mlflow import): lets ``--tracking common/tracking/mlflow.json`` name it
from common.errors import DataError

__version__ = "0.2.0"
__all__ = ["DataError", "__version__", "tracking"]
