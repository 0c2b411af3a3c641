"""Keep transformers' own logging, progress bars and deprecation notices out of rankwise's output."""

from __future__ import annotations

import warnings


def quiet_transformers() -> None:
    """Silence transformers' chatter; rankwise's progress bars and one-line errors are the output.

    Its FutureWarnings announce API changes to *callers* of transformers; a rankwise user cannot act
    on them, and printed mid-run they break a progress bar in two. rankwise avoids the deprecated
    calls it knows of; this catches the rest, raised inside transformers or attributed to rankwise.
    """
    import transformers

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    for module in (r"transformers(\..*)?$", r"rankwise(\..*)?$"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    # A renamed forward() keyword is reported at the caller of the decorated forward, which is torch's
    # Module.__call__: only transformers' wording identifies it.
    warnings.filterwarnings("ignore", message=r"`\w+` is deprecated and will be removed in version",
                            category=FutureWarning)
