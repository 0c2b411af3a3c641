"""Compression methods; importing this package fills the compressor registry."""

from rankwise.compress.methods import asvd, fwsvd, svd, svd_llm

__all__ = ["asvd", "fwsvd", "svd", "svd_llm"]
