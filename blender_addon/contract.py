"""The backend's contract (`backend/stableavatar/contract.py`), loaded from that one file.

The add-on and the backend must agree on every message and parameter, so there is exactly one copy: the
backend package's, which the extension zip ships too. This module executes that file as itself (standard
library only, no torch), so `from .contract import GenerationParams` works here as it does in the backend.
"""
import importlib.util
import os
import sys

_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend", "stableavatar",
                     "contract.py")
if not os.path.isfile(_FILE):
    raise ImportError(f"the extension is incomplete: {_FILE} is missing; reinstall the StableAvatar extension")
importlib.util.spec_from_file_location(__name__, _FILE).loader.exec_module(sys.modules[__name__])
