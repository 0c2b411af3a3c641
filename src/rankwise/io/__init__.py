"""Loading and saving models; asset files; atomic output folders."""

from rankwise.io.atomic import atomic_folder, atomic_write_text, check_output_folder
from rankwise.io.loading import BUNDLED_MODELS, DEFAULT_MODEL, cache_dir, load_model, resolve_model_folder
from rankwise.io.saving import save_model

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "atomic_folder",
    "atomic_write_text",
    "cache_dir",
    "check_output_folder",
    "load_model",
    "resolve_model_folder",
    "save_model",
]
