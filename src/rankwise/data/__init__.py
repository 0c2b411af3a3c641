"""Text sources and token windows."""

from rankwise.data.sources import BUNDLED_CORPORA, SPLITS, documents
from rankwise.data.windows import token_stream, windows

__all__ = ["BUNDLED_CORPORA", "SPLITS", "documents", "token_stream", "windows"]
