"""One error type for bad input, so that users see one clear message naming the file or key."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a missing folder, an empty class, a corrupt or wrongly shaped image, a NaN.

    The message always names the offending file, folder or key, so that it can be fixed without a traceback.
    """
