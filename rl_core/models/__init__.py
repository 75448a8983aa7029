"""Built-in architectures: one module per family. Importing this package registers them all."""

import importlib
import pkgutil

from rl_core.models.base import ModelBase

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ModelBase"]
