"""Keep transformers' own logging and progress bars out of rankwise's output."""

from __future__ import annotations


def quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
