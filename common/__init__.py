"""synthaug common: the shared pieces that the bundles' configs name with ``"_target_": "common...."``.

Sub-packages are layered one way (see README, "Layers"; ``tests/test_import_layers.py`` checks every import):
``errors``/``fs``/``viz``/``tracking`` -> ``data`` -> ``networks``/``losses``/``metrics`` -> ``engines`` ->
``privacy``/``audit`` -> ``protocol`` -> ``bundle``/``overrides``/``run_lock``; a module imports its own layer and
those below, never one above.
"""

from common import tracking  # light (no mlflow import): lets ``--tracking common/tracking/mlflow.json`` name it
from common.errors import DataError

__version__ = "0.2.0"
__all__ = ["DataError", "__version__", "tracking"]
