"""Is the Hugging Face Hub reachable? Answered in at most a few seconds, never a long hang."""

from __future__ import annotations

import os
import socket

HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("RANKWISE_OFFLINE"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False
