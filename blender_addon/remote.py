"""The remote-backend client (`backend/stableavatar/remote/`), loaded from that one place, like the contract.

The add-on and `stableavatar remote` on the command line drive the same code: the SSH command line, the
classification of its failures, the verified and resumable file transfer and the reconnects. That package uses
only the standard library and the contract (`from .. import contract`, which here resolves to the add-on's
`blender_addon.contract`), so it loads under this module's name without the rest of the backend.
"""
import sys

from .backend_package import load

sys.modules[__name__] = load(__name__, "remote")  # the import statement returns what sys.modules holds
