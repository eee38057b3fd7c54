"""The model hub, tried once: whether the Hugging Face hub can be reached, and offline mode when not.

``huggingface_hub`` retries an unreachable hub five times with back-off (about a minute per
model, and once per slide before). :func:`offline_unless_reachable` probes the endpoint once
(TCP connect, a few seconds at most) and, when it cannot be reached, switches ``huggingface_hub``
to offline mode for this process, so weights come from the local cache or fail at once.
``HF_HUB_OFFLINE=1`` is honoured as it is.
"""
from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

__all__ = ["hub_reachable", "offline_unless_reachable"]

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint (``$HF_ENDPOINT``, default huggingface.co:443)
    opens within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_unless_reachable() -> bool:
    """Put ``huggingface_hub`` in offline mode for this process unless the hub answers; returns
    whether the process is offline now."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    if hub_reachable():
        return False
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    log.info("the Hugging Face hub cannot be reached: weights come from local files or the local cache only")
    return True
