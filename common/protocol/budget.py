"""Training budgets that keep arm comparisons fair.

An arm that trains on more images (real + synthetic, classic-augmented repeats, oversampled minorities) also takes
more gradient steps per epoch. With the same number of *epochs* in every arm, a gain can come from training longer
rather than from the extra data (the brain protocol measured exactly that: +59 Dice points that vanished at equal
steps). ``equal_step_epochs`` gives such an arm proportionally fewer epochs instead.
"""

from __future__ import annotations

__all__ = ["equal_step_epochs"]


def equal_step_epochs(epochs: int, n_reference: int, n_arm: int) -> int:
    """Epochs for an arm of ``n_arm`` training images that cost the same gradient steps as ``epochs`` epochs over
    ``n_reference`` images (the real training set): ``round(epochs * n_reference / n_arm)``, at least 1."""
    if epochs < 1 or n_reference < 1:
        raise ValueError(f"equal_step_epochs: need epochs >= 1 and n_reference >= 1, got {epochs}, {n_reference}")
    return max(1, int(round(epochs * n_reference / max(1, n_arm))))
