"""Fuzz the options of ``sensitivity``, ``prune`` and ``patch`` (hypothesis) as the suite in
tests/test_fuzz_cli.py does for the other commands: every case ends in success or in one line on
stderr with exit code 2."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import strategies as st  # noqa: E402

from ..test_fuzz_cli import COUNT, FILE, LIST, NUMBER, OUT, SIZE, _names, fuzz_options, make_files  # noqa: E402

pytestmark = pytest.mark.fuzz
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
    return make_files(tmp_path_factory.mktemp("fuzz-files"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options(command, files, tmp_path_factory, monkeypatch, capsys):
    base, options = COMMANDS[command]
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    fuzz_options(command, base, options, files, CI_EXAMPLES[command], monkeypatch, capsys)
