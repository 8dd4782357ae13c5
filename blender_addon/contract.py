"""The backend's contract package (`backend/stableavatar/contract/`), loaded from that one place.

The add-on and the backend must agree on every message and parameter, so there is exactly one copy: the
backend package's, which the extension zip ships too. Importing this module loads that package (standard
library only, no torch) under this module's name, so `from .contract import GenerationParams` works here as
it does in the backend.
"""
import importlib.util
import os
import sys

_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend", "stableavatar", "contract")
if not os.path.isfile(os.path.join(_DIR, "__init__.py")):
    raise ImportError(f"the extension is incomplete: {_DIR} is missing; reinstall the StableAvatar extension")
_spec = importlib.util.spec_from_file_location(__name__, os.path.join(_DIR, "__init__.py"),
                                               submodule_search_locations=[_DIR])
_package = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _package  # the import statement returns what sys.modules holds when this file ends
_spec.loader.exec_module(_package)
