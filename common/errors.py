"""One error type for bad input, so that users see one clear message naming the file or key."""

from __future__ import annotations

import os
import sys


class DataError(ValueError):
    """Bad input data: a missing folder, an empty class, a corrupt or wrongly shaped image, a NaN.

    The message always names the offending file, folder or key, so that it can be fixed without a traceback.
    """


def find_data_error(exc: BaseException | None) -> DataError | None:
    """The first ``DataError`` in ``exc``'s chain of causes/contexts, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """End the program with the ``DataError``'s message alone when one is anywhere in an uncaught exception's chain.

    MONAI's bundle runner wraps an error raised inside a config expression in several ``RuntimeError``s with long
    tracebacks; a user who pointed ``dataset_dir`` at the wrong folder needs one line. Other errors keep their full
    traceback, and ``SYNTHAUG_TRACEBACK=1`` shows it for data errors too. The exit status stays 1.
    """
    previous = sys.excepthook
    if getattr(previous, "_synthaug", False):
        return

    def hook(exc_type, exc, tb):
        err = find_data_error(exc)
        if err is None or os.environ.get("SYNTHAUG_TRACEBACK"):
            previous(exc_type, exc, tb)
        else:
            print(f"synthaug: error: {err}", file=sys.stderr)

    hook._synthaug = True
    sys.excepthook = hook
