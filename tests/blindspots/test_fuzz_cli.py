"""Fuzz the options of ``blindspots`` (hypothesis) as the suite in
tests/test_fuzz_cli.py does for the other commands: every case ends in success or in one line on
stderr with exit code 2."""

import pytest

hypothesis = pytest.importorskip("hypothesis")

from ..test_fuzz_cli import COUNT, FILE, NUMBER, OUT, SIZE, fuzz_options, make_files  # noqa: E402

pytestmark = pytest.mark.fuzz
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
    return make_files(tmp_path_factory.mktemp("fuzz-files"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options(command, files, tmp_path_factory, monkeypatch, capsys):
    base, options = COMMANDS[command]
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    fuzz_options(command, base, options, files, CI_EXAMPLES[command], monkeypatch, capsys)
