"""Load a torch-free package of the backend (`backend/stableavatar/<name>/`) from its one copy in the extension.

The add-on and the backend must agree on every message, parameter and transfer, so the add-on does not keep
copies: it loads the backend's own packages (standard library only) under the add-on module's name, so that
`from .contract import GenerationParams` works here as it does in the backend.
"""
import importlib.util
import os
import sys

BACKEND = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend", "stableavatar")


def load(module_name: str, package: str):
    """Execute backend/stableavatar/<package>/ as module `module_name` and return it."""
    folder = os.path.join(BACKEND, package)
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        raise ImportError(f"the extension is incomplete: {folder} is missing; reinstall the StableAvatar extension")
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before it runs: its own relative imports look it up there
    spec.loader.exec_module(module)
    return module
