"""augsearch: search data-augmentation policies for knowledge distillation.

The public API is small: :func:`load_policy` reads a file written by ``augsearch export`` and gives
the albumentations pipeline and the KD settings; :class:`Policy` is the plain data behind it.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise checks for updates online

__version__ = "0.1.0"


def load_policy(path):
    """Read an exported policy file; see :func:`augsearch.export.load_policy`."""
    from augsearch.export import load_policy as _load

    return _load(path)


def __getattr__(name: str):
    if name in ("Policy", "LoadedPolicy"):
        from augsearch import export, policy

        return {"Policy": policy.Policy, "LoadedPolicy": export.LoadedPolicy}[name]
    raise AttributeError(name)


__all__ = ["LoadedPolicy", "Policy", "__version__", "load_policy"]
