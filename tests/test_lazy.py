"""robustlab.lazy: a module declared with ``lazy_module`` is imported on first use, not before."""

import subprocess
import sys
import textwrap

import pytest

from robustlab.lazy import lazy_module


def _run(tmp_path, code: str) -> str:
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import builtins\nbuiltins.RAN = ['pkg']\n")
    (pkg / "sub.py").write_text(
        "import builtins\nbuiltins.RAN.append('sub')\nfrom . import other\nVALUE = other.X + 1\n"
    )
    (pkg / "other.py").write_text("X = 41\n")
    probe = f"import sys, builtins\nsys.path.insert(0, {str(tmp_path)!r})\n" + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_runs_on_first_attribute_access(tmp_path):
    out = _run(
        tmp_path,
        """
        from robustlab.lazy import lazy_module
        sub = lazy_module("lazypkg.sub")
        print(getattr(builtins, "RAN", None), "lazypkg" in sys.modules)
        print(sub.VALUE, builtins.RAN)
        """,
    )
    assert out.splitlines() == ["None False", "42 ['pkg', 'sub']"]


def test_an_imported_module_is_returned_as_is():
    assert lazy_module("sys") is sys
    assert lazy_module("robustlab.lazy") is sys.modules["robustlab.lazy"]


def test_first_reads_from_several_threads_see_the_whole_module(tmp_path):
    out = _run(
        tmp_path,
        """
        import threading
        from robustlab.lazy import lazy_module
        sub = lazy_module("lazypkg.sub")
        seen = []
        threads = [threading.Thread(target=lambda: seen.append(sub.VALUE)) for _ in range(8)]
        [t.start() for t in threads]; [t.join() for t in threads]
        print(seen, builtins.RAN)
        """,
    )
    assert out == "[42, 42, 42, 42, 42, 42, 42, 42] ['pkg', 'sub']"


def test_a_missing_module_is_refused_at_declaration():
    with pytest.raises(ModuleNotFoundError, match="no_such_module_xyz"):
        lazy_module("no_such_module_xyz")
    with pytest.raises(ModuleNotFoundError, match="robustlab.no_such"):
        lazy_module("robustlab.no_such")


def test_a_zoo_model_and_cached_digits_do_not_run_onnx_or_sklearn():
    probe = (
        "import sys\nfrom robustlab.model import load_model\nfrom robustlab.data import load_data\n"
        "load_model('zoo:mlp'); load_data('digits')\n"
        "print(' '.join(m for m in ('onnx', 'sklearn') if m in sys.modules))"
    )
    # first run may fill the digits cache (that one runs scikit-learn); the second must not
    subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
