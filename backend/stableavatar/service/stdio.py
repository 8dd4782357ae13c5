"""The protocol's own copies of stdin/stdout, out of reach of everything else in the process."""
from __future__ import annotations

import os
import sys


def claim_stdio():
    """Take private copies of stdin/stdout for the protocol, then point fds 0/1 at devnull/stderr so that no
    print(), C library or child process (ffmpeg) can read protocol input or write into protocol output."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out
