"""Rank allocators; importing this package fills the allocator registry."""

from rankwise.compress.allocators import energy, global_error, uniform, welore
from rankwise.compress.allocators.base import ALLOCATORS, MatrixSpectrum, get_allocator

__all__ = ["ALLOCATORS", "MatrixSpectrum", "energy", "get_allocator", "global_error", "uniform", "welore"]
