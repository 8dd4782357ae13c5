"""`stableavatar download`: fetch the official release (FrancisRing/StableAvatar on Hugging Face)."""
from __future__ import annotations

from pathlib import Path

from .checkpoints import HF_REPO, locate
from .errors import CheckpointError

# The bundle holds the Wan base model, wav2vec2 and both StableAvatar transformers; the vocal separator
# (Kim_Vocal_2.onnx) is an optional pre-processing tool and is skipped.
ALLOW = ["Wan2.1-Fun-V1.1-1.3B-InP/*", "wav2vec2-base-960h/*", "StableAvatar-1.3B/*"]


def download(to: Path) -> Path:
    from huggingface_hub import snapshot_download

    created = not to.exists()
    to.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch(to, snapshot_download)
    except CheckpointError:
        if created and not any(to.iterdir()):
            to.rmdir()  # leave nothing behind when nothing was fetched
        raise


def _fetch(to: Path, snapshot_download) -> Path:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(HF_REPO, local_dir=to, allow_patterns=ALLOW + [p.replace("/*", "/**") for p in ALLOW])
    except LocalEntryNotFoundError:
        raise CheckpointError(f"cannot reach huggingface.co to download {HF_REPO}",
                              hint="check the network/proxy (HF_ENDPOINT, HTTPS_PROXY), or copy an existing "
                                   f"checkpoint folder to {to}") from None
    except HfHubHTTPError as exc:
        raise CheckpointError(f"download of {HF_REPO} failed: {str(exc).splitlines()[0][:200]}",
                              hint="retry; partial files are resumed") from None
    except OSError as exc:
        raise CheckpointError(f"download of {HF_REPO} failed: {exc}", hint="check free disk space (about 20 GB)") from None
    locate(to)  # verify the layout is complete
    return to
