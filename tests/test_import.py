import subprocess
import sys


def test_import_rankwise_does_not_import_heavy_libraries() -> None:
    code = ("import sys, rankwise; heavy = [m for m in ('transformers', 'matplotlib', 'torch') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_version_is_exposed() -> None:
    import rankwise

    assert rankwise.__version__.count(".") == 2
