"""Start-up: ``import robustlab`` and the command line's ``--help`` load no heavy library; the public
API resolves on first use. (Times are measured in benchmarks/startup_benchmark.py, not here.)"""

import subprocess
import sys

import robustlab

HEAVY = ("torch", "matplotlib", "sklearn", "scipy", "onnx", "onnxruntime", "jinja2", "numpy")


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys\n{code}\nprint(' '.join(sorted(set(m.split('.')[0] for m in sys.modules))))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split("\n")[-2].split()
    return [m for m in HEAVY if m in loaded]


def test_import_and_help_load_no_heavy_library():
    assert _loaded_after("import robustlab") == []
    assert _loaded_after("import robustlab.cli") == []
    help_run = (
        "from robustlab.cli import main\nsys.argv = ['robustlab', '--help']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
    )
    assert _loaded_after(help_run) == []


def test_public_names_resolve():
    for name in robustlab.__all__:
        assert getattr(robustlab, name) is not None, name
    assert set(robustlab.__all__) <= set(dir(robustlab))
    from robustlab import LpBall, load_model  # noqa: F401  (the documented imports)
    from robustlab.threat import LpBall as Same

    assert LpBall is Same
    assert callable(robustlab.attacks.evaluate)  # a subpackage as an attribute, as in the README


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        robustlab.nope  # noqa: B018
