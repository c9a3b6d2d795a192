"""Late steps never cost the report or the export.

A protocol's result is its trained models, their scores and the report; the synthesis/privacy audit of each fold,
the generator comparison and the quality audit after GAN training are extras that read those results. When one of
them cannot run (a set too small for it: the caller skips it with a warning first) or fails, the run goes on: the
report is written and the model exported, and the report's notes say what is missing and why, with the traceback
in the log. A KeyboardInterrupt still stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["late_step"]

T = TypeVar("T")


def late_step(what: str, notes: list[str], step: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``step(*args, **kwargs)``; on an exception, a note ``"<what> failed (<type>: <message>) ..."`` in ``notes``
    (the report's), the traceback in the log, and None instead of its result."""
    try:
        return step(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 (a late step may fail in any way; the report says how)
        note = f"{what} failed ({type(exc).__name__}: {exc}); the report and the export went on without it"
        logger.warning(note, exc_info=True)
        notes.append(note)
        return None
