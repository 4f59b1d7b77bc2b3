"""Fuzz the options of ``sensitivity``, ``prune`` and ``patch`` (hypothesis) as the suite in
tests/test_fuzz_cli.py does for the other commands: every case ends in success or in one line on
stderr with exit code 2."""

import signal

import pytest

from ..conftest import run_cli as run
from ..fuzz import assert_one_line_or_success, examples

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ..test_fuzz_cli import COUNT, FILE, LIST, NUMBER, OUT, SIZE, Hang, _argv, _names  # noqa: E402

pytestmark = pytest.mark.fuzz
HANG_S = 120
MLP = {"--model": "zoo:mlp", "--data": "digits"}
COMMANDS = {
    "sensitivity": (
        {**MLP, "--n": "4", "--samples": "1", "--iterations": "1", "--noise": "none",
         "--formats": "none", "--layer-formats": "none", "--out": "{d}/s.json"},
        {"--model": FILE, "--data": FILE, "--eps": NUMBER, "--n": SIZE, "--samples": COUNT,
         "--iterations": COUNT, "--noise": st.one_of(LIST, st.just("none")), "--draws": COUNT,
         "--robust-n": SIZE, "--formats": _names("float16", "bfloat16", "int8", "none"),
         "--layer-formats": _names("int8", "float16", "none"), "--certify-n": SIZE,
         "--calibration": FILE, "--batch-size": SIZE, "--out": OUT},
    ),
    "prune": (
        {**MLP, "--eps": "0.02", "--sparsity": "0.5", "--epochs": "0", "--n": "4",
         "--out": "{d}/m.onnx"},
        {"--model": FILE, "--sparsity": st.one_of(LIST, NUMBER),
         "--method": _names("magnitude", "hydra", "pwoa"), "--structure": _names("channel"),
         "--objective": _names("pgd-at", "trades", "ibp"), "--eps": SIZE, "--epochs": COUNT,
         "--score-epochs": COUNT, "--n": SIZE, "--lr": NUMBER, "--test-data": FILE,
         "--out": OUT, "--report": OUT},
    ),
    "patch": (
        {"--standard": "zoo:mlp", "--robust": "zoo:mlp", "--data": "digits", "--eps": "0.02",
         "--scale": "0", "--n": "4", "--out": "{d}/p.json"},
        {"--standard": FILE, "--robust": FILE, "--target": FILE, "--data": FILE, "--eps": SIZE,
         "--scale": st.one_of(LIST, NUMBER), "--layers": NUMBER, "--n": SIZE, "--out": OUT},
    ),
}  # fmt: skip
CI_EXAMPLES = {"sensitivity": 12, "prune": 10, "patch": 10}


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
