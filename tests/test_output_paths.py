"""Output paths: every command creates the missing folders of ``--out``; a path that cannot be
created (under a file, a folder given for a file) is one line on stderr and exit code 2, checked
before any work is done."""

import json
import os

import pytest

from .conftest import SHARED
from .conftest import run_cli as run

TEST = SHARED / "benchmarks" / "test"
needs_shared = pytest.mark.skipif(not TEST.exists(), reason="shared benchmarks not present")
MLP = ["--model", "zoo:mlp", "--data", "digits"]

# command -> (arguments without --out, what --out names: "file" or "folder"); the cheapest runs
COMMANDS = {
    "attack": ([*MLP, "--eps", "0.05", "--n", "4", "--attacks", "fgsm"], "file"),
    "certify": ([*MLP, "--eps", "0.05", "--n", "4", "--method", "ibp"], "file"),
    "corrupt": (
        [*MLP, "--n", "4", "--corruptions", "gaussian_noise", "--severities", "1"],
        "file",
    ),
    "explain": ([*MLP, "--method", "saliency", "--n", "2"], "file"),
    "smooth": ([*MLP, "--sigma", "0.25", "--n0", "8", "--samples", "64", "--n", "2"], "file"),
    "train": (
        ["--arch", "mlp", "--data", "digits-train", "--method", "standard", "--eps", "0.01"]
        + ["--epochs", "1", "--n", "4"],
        "file",
    ),
    "audit": ([*MLP, "--n", "4", "--eps", "0,0.05", "--budget", "20"], "folder"),
    "demo": ([], "folder"),
    "verify": ([str(TEST / "test_nano.onnx"), str(TEST / "test_nano.vnnlib")], "file"),
    "verify-benchmark": (["{instances}"], "file"),
}
SLOW = {"demo"}  # trains and audits; its folder goes through the same code as audit's


def _args(command: str, tmp_path) -> list[str]:
    if command.startswith("verify") and not TEST.exists():
        pytest.skip("shared benchmarks not present")
    instances = tmp_path / "instances.csv"
    instances.write_text(f"{TEST / 'test_nano.onnx'},{TEST / 'test_nano.vnnlib'},30\n")
    args, _ = COMMANDS[command]
    # verify records nothing; verify-benchmark keeps its results database beside --out
    db = [] if command.startswith("verify") else ["--db", tmp_path / "db.sqlite"]
    return [command, *[a.format(instances=instances) for a in args], *db]


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - SLOW))
def test_missing_output_folders_are_created(command, tmp_path, monkeypatch, capsys):
    kind = COMMANDS[command][1]
    target = tmp_path / "new" / "deeper" / ("out" if kind == "folder" else "result.json")
    if command == "train":
        target = target.with_name("model.onnx")
    if command == "verify-benchmark":
        target = target.with_name("results.csv")
    code, _, err = run(monkeypatch, capsys, *_args(command, tmp_path), "--out", target)
    assert code == 0, err
    written = target / "report.json" if kind == "folder" else target
    assert written.is_file()
    if command == "verify-benchmark":  # the results database goes beside --out by default
        assert target.with_suffix(".sqlite").is_file()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_output_under_a_file_is_one_line_exit_2(command, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "sub" / "result.json"
    code, out, err = run(monkeypatch, capsys, *_args(command, tmp_path), "--out", target)
    assert code == 2, err
    folder = target if COMMANDS[command][1] == "folder" else target.parent
    assert err.strip() == f"error: --out: cannot create the folder {folder} (Not a directory)"
    assert out == ""  # nothing computed, nothing printed


@pytest.mark.parametrize("command", ["attack", "verify", "verify-benchmark"])
def test_folder_given_for_a_file_is_one_line_exit_2(command, tmp_path, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, *_args(command, tmp_path), "--out", tmp_path)
    assert code == 2
    assert err.strip() == f"error: --out expects a file path; found the folder {tmp_path}"


def test_file_given_for_a_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run(monkeypatch, capsys, *_args("audit", tmp_path), "--out", blocker)
    assert code == 2
    assert err.strip() == f"error: --out expects a folder; found the file {blocker}"


def test_run_history_and_report_paths(tmp_path, monkeypatch, capsys):
    """--db under a file, --report of train under a file, runs compare --out under a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["attack", *COMMANDS["attack"][0], "--out", tmp_path / "r.json"]
    code, _, err = run(monkeypatch, capsys, *args, "--db", blocker / "runs.sqlite")
    assert code == 2
    assert err.strip() == f"error: --db: cannot create the folder {blocker} (a file has that name)"
    db = tmp_path / "new" / "runs.sqlite"
    code, _, err = run(monkeypatch, capsys, *args, "--db", db)
    assert code == 0, err
    code, _, err = run(
        monkeypatch, capsys, "runs", "compare", "1", "1", "--db", db, "--out", blocker / "c.html"
    )
    assert code == 2 and err.strip() == (
        f"error: --out: cannot create the folder {blocker} (a file has that name)"
    )
    page = tmp_path / "pages" / "c.html"
    code, _, err = run(monkeypatch, capsys, "runs", "compare", "1", "1", "--db", db, "--out", page)
    assert code == 0 and page.is_file(), err
    train = _args("train", tmp_path)
    code, _, err = run(
        monkeypatch, capsys, *train, "--out", tmp_path / "m.onnx", "--report", blocker / "m.json"
    )
    assert code == 2 and "error: --report: cannot create the folder" in err


@needs_shared
def test_verify_result_in_a_new_folder(tmp_path, monkeypatch, capsys):
    target = tmp_path / "vb" / "nano" / "result.txt"
    code, out, err = run(monkeypatch, capsys, *_args("verify", tmp_path), "--out", target)
    assert code == 0 and out.strip().splitlines()[-1] in {"holds", "violated"}, err
    assert target.read_text().split()[0] in {"unsat", "sat"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        args = ["attack", *COMMANDS["attack"][0], "--db", tmp_path / "db.sqlite"]
        code, _, err = run(monkeypatch, capsys, *args, "--out", locked / "sub" / "r.json")
        assert code == 2 and err.strip().startswith(
            f"error: --out: cannot create the folder {locked / 'sub'}"
        )
        code, _, err = run(monkeypatch, capsys, *args, "--out", locked / "r.json")
        assert code == 2 and err.strip() == f"error: --out: the folder {locked} is not writable"
    finally:
        locked.chmod(0o700)


def test_report_is_written_where_asked(tmp_path, monkeypatch, capsys):
    target = tmp_path / "a" / "b" / "r.json"
    args = ["attack", *COMMANDS["attack"][0], "--db", tmp_path / "db.sqlite", "--out", target]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads(target.read_text())["kind"] == "attack"
    assert target.with_suffix(".html").is_file()


@pytest.mark.parametrize("command", ["attack", "audit"])
def test_a_command_that_fails_leaves_no_folder(command, tmp_path, monkeypatch, capsys):
    """Output folders are checked before the work and created when results are written: bad
    input leaves nothing behind (also not the default --out folder in the working directory)."""
    monkeypatch.chdir(tmp_path)
    args = [command, "--model", "missing.onnx", "--data", "digits", "--eps", "0.1"]
    code, _, err = run(monkeypatch, capsys, *args, "--db", tmp_path / "db" / "h.sqlite")
    assert code == 2 and "model file not found" in err
    code, _, err = run(
        monkeypatch,
        capsys,
        *args,
        "--out",
        tmp_path / "new" / "r",
        "--db",
        tmp_path / "db" / "h.sqlite",
    )
    assert code == 2 and "model file not found" in err
    assert list(tmp_path.iterdir()) == []
