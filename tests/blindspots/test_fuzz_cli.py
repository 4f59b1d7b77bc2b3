"""Fuzz the options of ``blindspots`` (hypothesis) as the suite in
tests/test_fuzz_cli.py does for the other commands: every case ends in success or in one line on
stderr with exit code 2."""

import signal

import pytest

from ..conftest import run_cli as run
from ..fuzz import assert_one_line_or_success, examples

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ..test_fuzz_cli import COUNT, FILE, NUMBER, OUT, SIZE, Hang, _argv  # noqa: E402

pytestmark = pytest.mark.fuzz
HANG_S = 120
MLP = {"--model": "zoo:cnn", "--data": "digits"}
COMMANDS = {
    "blindspots": (
        {**MLP, "--n": "20", "--pairs": "2", "--steps": "5", "--shape-pairs": "10",
         "--out": "{d}/b.json"},
        {"--model": FILE, "--data": FILE, "--n": SIZE, "--pairs": COUNT, "--steps": COUNT,
         "--tol": NUMBER, "--shape-pairs": COUNT, "--patch": COUNT, "--alpha": NUMBER,
         "--seed": NUMBER, "--out": OUT},
    ),
}  # fmt: skip
CI_EXAMPLES = {"blindspots": 10}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-files")
    (d / "adir").mkdir()
    (d / "afile").write_text("x")
    (d / "garbage.onnx").write_bytes(b"\x08\x07garbage\xff" * 10)
    (d / "garbage.npz").write_bytes(b"PK\x03\x04garbage")
    (d / "empty.csv").write_text("")
    (d / "data.txt").write_text("1,2,3\n")
    return d


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options(command, files, tmp_path_factory, monkeypatch, capsys):
    base, options = COMMANDS[command]
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    tried = []

    @settings(max_examples=examples(CI_EXAMPLES[command], long=10))
    @given(data=st.data())
    def case(data):
        tried.append(1)
        chosen = data.draw(
            st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=3, unique=True)
        )
        opts = dict(base)
        for key in chosen:
            opts[key] = data.draw(options[key], label=key)
        argv = _argv(command, opts, files)

        def alarm(*_):
            raise Hang(f"robustlab {' '.join(argv)} ran past {HANG_S} s")

        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(HANG_S)
        try:
            code, out, err = run(monkeypatch, capsys, *argv)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        assert_one_line_or_success(code, out, err, f"robustlab {' '.join(argv)}")

    case()
    print(f"fuzz {command}: {len(tried)} cases")
