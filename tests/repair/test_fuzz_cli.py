"""Fuzz the options of ``repair`` (hypothesis) as the suite in
tests/test_fuzz_cli.py does for the other commands: every case ends in success or in one line on
stderr with exit code 2."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import strategies as st  # noqa: E402

from ..test_fuzz_cli import COUNT, FILE, NUMBER, OUT, SIZE, fuzz_options, make_files  # noqa: E402

pytestmark = pytest.mark.fuzz
MLP = {"--model": "zoo:mlp", "--data": "digits"}
COMMANDS = {
    "repair": (
        {**MLP, "--eps": "0.01", "--n": "2", "--rounds": "1", "--timeout": "2",
         "--out": "{d}/r.onnx"},
        {"--model": FILE, "--data": FILE, "--eps": st.one_of(SIZE, NUMBER), "--spec": FILE,
         "--n": SIZE, "--rounds": COUNT, "--epochs": COUNT, "--lr": NUMBER, "--penalty": NUMBER,
         "--margin": NUMBER, "--anchor-weight": NUMBER, "--timeout": SIZE, "--test-data": FILE,
         "--out": OUT, "--report": OUT, "--domain": FILE, "--region-samples": COUNT,
         "--boxes": COUNT, "--box-weight": NUMBER},
    ),
}  # fmt: skip
CI_EXAMPLES = {"repair": 10}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("fuzz-files"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options(command, files, tmp_path_factory, monkeypatch, capsys):
    base, options = COMMANDS[command]
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    fuzz_options(command, base, options, files, CI_EXAMPLES[command], monkeypatch, capsys)
