"""Gradient Rectified Unlearning (GRU) for open-unlearning.

Public API: :func:`rectify_` and :class:`RectifyStats` (pure torch), loaded lazily
so that Hydra's plugin scan does not import torch in unrelated apps.
"""

__version__ = "0.1.0"
__all__ = ["RectifyStats", "rectify_"]


def __getattr__(name):
    if name in __all__:
        from gru_plugin import rectify

        return getattr(rectify, name)
    raise AttributeError(f"module 'gru_plugin' has no attribute {name!r}")
