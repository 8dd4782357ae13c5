"""The backend's contract package (`backend/stableavatar/contract/`), loaded from that one place.

Importing this module loads that package (standard library only, no torch) under this module's name
(`backend_package.py` says why there is one copy).
"""
import sys

from .backend_package import load

sys.modules[__name__] = load(__name__, "contract")  # the import statement returns what sys.modules holds
