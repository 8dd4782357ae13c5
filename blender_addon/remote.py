"""The remote-backend client (`backend/stableavatar/remote/`), loaded from that one place, like the contract.

The add-on and `stableavatar remote` on the command line drive the same code: the SSH command line, the
classification of its failures, the verified and resumable file transfer and the reconnects. That package uses
only the standard library and the contract (`from .. import contract`, which here resolves to the add-on's
`blender_addon.contract`), so it loads under this module's name without the rest of the backend.
"""
import importlib.util
import os
import sys

_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend", "stableavatar", "remote")
if not os.path.isfile(os.path.join(_DIR, "__init__.py")):
    raise ImportError(f"the extension is incomplete: {_DIR} is missing; reinstall the StableAvatar extension")
_spec = importlib.util.spec_from_file_location(__name__, os.path.join(_DIR, "__init__.py"),
                                               submodule_search_locations=[_DIR])
_package = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _package  # the import statement returns what sys.modules holds when this file ends
_spec.loader.exec_module(_package)
