"""Fuzz every command's options (hypothesis) through the in-process CLI runner: random values and
combinations (negative, NaN, infinite, huge and non-numeric numbers, unknown names, empty lists,
missing files, folders given as files, garbage files) on top of a cheap valid invocation. Each case
ends in success or in one line on stderr and exit code 2; never a traceback, an exit 1 or a hang."""

import signal

import pytest

from .conftest import SHARED
from .conftest import run_cli as run
from .fuzz import assert_one_line_or_success, examples

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.fuzz
TEST = SHARED / "benchmarks" / "test"
HANG_S = 120  # a case running longer than this counts as a hang

# numbers: bad ones, edge ones and a few valid small ones (never valid-but-huge work amounts)
BAD_NUMBERS = st.sampled_from(
    ["-1", "0", "-0.5", "nan", "NaN", "inf", "-inf", "1e999", "abc", "", " ", "1,2", "0x10", "--"]
)
SMALL = st.sampled_from(["1", "2", "0.5", "0.01", "3"])
HUGE = st.sampled_from(["1e308", "99999999999999999999", "1e30"])
NUMBER = st.one_of(BAD_NUMBERS, SMALL, st.floats(-1e6, 1e6).map(repr), st.integers(-5, 5).map(str))
COUNT = NUMBER  # work amounts: never huge
SIZE = st.one_of(NUMBER, HUGE)  # sizes clamped by the data (--n, --batch-size, eps, ...)
NAME = st.one_of(
    st.sampled_from(["", " ", ",", ",,", "nope", "NOPE", "all,", "ibp,nope", "-", "a b"]),
    st.text(min_size=0, max_size=6),
)
LIST = st.lists(st.one_of(BAD_NUMBERS, SMALL, HUGE), max_size=3).map(",".join)
FILE = st.sampled_from(
    ["{d}/missing.onnx", "{d}/adir", "{d}/garbage.onnx", "{d}/empty.csv", "{d}/garbage.npz",
     "{d}/afile/under", "{d}/data.txt", "zoo:nope", "digits", ""]
)  # fmt: skip
OUT = st.sampled_from(["{d}/adir", "{d}/afile/x.json", "{d}/new/deep/r.json", "{d}/afile", ""])
DROP = st.just(None)  # the option left out (a required one: a usage error)


def _names(*valid):
    return st.one_of(
        NAME, st.sampled_from(valid), st.lists(st.sampled_from(valid), max_size=3).map(",".join)
    )


MLP = {"--model": "zoo:mlp", "--data": "digits"}
# command -> (a cheap valid invocation, option -> values)
COMMANDS = {
    "attack": (
        {**MLP, "--eps": "0.05", "--n": "2", "--attacks": "fgsm", "--out": "{d}/r.json"},
        {"--model": FILE, "--data": FILE, "--eps": st.one_of(LIST, SIZE, DROP),
         "--norm": _names("inf", "2", "1"), "--suite": _names("fast", "standard"),
         "--attacks": _names("fgsm", "pgd", "square", "transfer"), "--n": COUNT,
         "--batch-size": SIZE, "--seed": NUMBER, "--surrogate": FILE, "--out": OUT, "--db": OUT},
    ),
    "certify": (
        {**MLP, "--eps": "0.05", "--n": "2", "--method": "ibp", "--out": "{d}/c.json"},
        {"--model": FILE, "--data": FILE, "--eps": st.one_of(LIST, SIZE, DROP),
         "--norm": _names("inf", "2"), "--method": _names("ibp", "crown", "crown-ibp"),
         "--n": SIZE, "--batch-size": SIZE, "--precision": _names("float32", "float64", "half"),
         "--out": OUT},
    ),
    "corrupt": (
        {**MLP, "--n": "2", "--corruptions": "gaussian_noise", "--severities": "1",
         "--out": "{d}/k.json"},
        {"--corruptions": _names("gaussian_noise", "fog", "noise", "extra", "all"),
         "--severities": st.one_of(LIST, NAME, st.sampled_from(["1-5", "5-1", "0-2", "1-", "-"])),
         "--baseline": FILE, "--n": COUNT, "--max-shift": COUNT, "--batch-size": SIZE,
         "--seed": NUMBER, "--data": FILE},
    ),
    "explain": (
        {**MLP, "--method": "saliency", "--n": "2", "--out": "{d}/e.json"},
        {"--method": _names("saliency", "occlusion", "sobol", "integrated-gradients"),
         "--n": SIZE, "--steps": COUNT, "--samples": COUNT, "--target": st.one_of(NAME, NUMBER, st.sampled_from(["label", "predicted"])),
         "--batch-size": SIZE, "--seed": NUMBER, "--model": FILE},
    ),
    "smooth": (
        {**MLP, "--sigma": "0.25", "--n0": "8", "--samples": "32", "--n": "2", "--out": "{d}/s.json"},
        {"--sigma": SIZE, "--n0": COUNT, "--samples": COUNT, "--alpha": NUMBER, "--n": SIZE,
         "--batch-size": SIZE, "--seed": NUMBER, "--data": FILE},
    ),
    "train": (
        {"--arch": "mlp", "--data": "digits-train", "--method": "standard", "--eps": "0.01",
         "--epochs": "1", "--n": "4", "--out": "{d}/m.onnx"},
        {"--arch": st.one_of(NAME, FILE), "--data": FILE,
         "--method": _names("standard", "gaussian", "fast-at"), "--eps": SIZE, "--epochs": COUNT,
         "--n": SIZE, "--batch-size": SIZE, "--lr": NUMBER, "--sigma": NUMBER,
         "--suite": _names("fast"), "--test-data": FILE, "--out": OUT},
    ),
    "audit": (
        {**MLP, "--n": "4", "--eps": "0,0.05", "--budget": "5", "--out": "{d}/audit"},
        {"--eps": LIST, "--norm": _names("inf", "2"), "--profile": _names("quick", "full"),
         "--baseline": FILE, "--budget": NUMBER, "--smoothing": NUMBER, "--n": COUNT,
         "--seed": NUMBER, "--batch-size": SIZE, "--out": OUT},
    ),
    "verify": (
        {"ONNX": str(TEST / "test_nano.onnx"), "SPEC": str(TEST / "test_nano.vnnlib"),
         "--timeout": "20"},
        {"ONNX": FILE, "--timeout": NUMBER, "--strategy": _names("auto", "bounds", "input-split"),
         "--out": OUT},
    ),
    "verify-benchmark": (
        {"INSTANCES": "{d}/instances.csv", "--out": "{d}/vb/results.csv"},
        {"INSTANCES": FILE, "--backend": _names("local"), "--workers": BAD_NUMBERS,
         "--timeout-scale": NUMBER, "--results-db": OUT, "--out": OUT, "--expected": FILE},
    ),
    "runs": (
        {"SUB": "list"},
        {"SUB": st.sampled_from(["list", "show", "compare", "nope", ""]),
         "ARGS": st.lists(st.one_of(NUMBER, HUGE), max_size=3), "--limit": SIZE, "--db": OUT},
    ),
    "demo": (
        {"--out": "{d}/afile/demo"},
        {"--out": st.sampled_from(["{d}/afile", "{d}/afile/x"])},
    ),
}  # fmt: skip
CI_EXAMPLES = {
    "attack": 25, "certify": 25, "corrupt": 15, "explain": 20, "smooth": 20, "train": 10,
    "audit": 8, "verify": 20, "verify-benchmark": 10, "runs": 25, "demo": 2,
}  # fmt: skip


def make_files(d):
    """The odd files the fuzz cases may name: a folder, a file, garbage ONNX / npz, empty CSV."""
    (d / "adir").mkdir()
    (d / "afile").write_text("x")
    (d / "garbage.onnx").write_bytes(b"\x08\x07garbage\xff" * 10)
    (d / "garbage.npz").write_bytes(b"PK\x03\x04garbage")
    (d / "empty.csv").write_text("")
    (d / "data.txt").write_text("1,2,3\n")
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = make_files(tmp_path_factory.mktemp("fuzz-files"))
    if TEST.exists():
        (d / "instances.csv").write_text(
            f"{TEST / 'test_nano.onnx'},{TEST / 'test_nano.vnnlib'},20\n"
        )
    return d


def _argv(command: str, opts: dict, d) -> list[str]:
    args = [command]
    for key in ("SUB", "ONNX", "SPEC", "INSTANCES"):
        if opts.get(key) is not None:
            args.append(opts[key].replace("{d}", str(d)))
    args += [a.replace("{d}", str(d)) for a in opts.get("ARGS") or []]
    for key, value in opts.items():
        if key.startswith("--") and value is not None:
            args += [key, value.replace("{d}", str(d))]
    return args


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so the CLI's own handlers do not catch it."""


def fuzz_options(command, base, options, files, ci_examples, monkeypatch, capsys) -> None:
    """Hypothesis draws 1-3 of ``options`` over the working ``base`` options of ``command``; every
    case must succeed or end in one line on stderr with exit code 2, within ``HANG_S``."""
    tried = []

    @settings(max_examples=examples(ci_examples, long=10))
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
    print(f"fuzz {command}: {len(tried)} cases")  # shown with -rP


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options(command, files, tmp_path_factory, monkeypatch, capsys):
    if command.startswith("verify") and not TEST.exists():
        pytest.skip("shared benchmarks not present")
    base, options = COMMANDS[command]
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # a default --out lands in a temporary folder
    fuzz_options(command, base, options, files, CI_EXAMPLES[command], monkeypatch, capsys)
