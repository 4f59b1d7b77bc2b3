"""One vocabulary: names spelled with hyphens or underscores, aliases, "did you mean" on unknown
names, shared defaults, --version."""

import inspect

import pytest

import robustlab as rl
from robustlab.errors import RobustlabError, canonical, did_you_mean, unknown
from tests.conftest import run_cli


def test_did_you_mean():
    assert did_you_mean("apgd", ["apgd-ce", "fab", "square"]) == "; did you mean 'apgd-ce'?"
    assert did_you_mean("zzz", ["apgd-ce", "fab"]) == ""
    msg = str(unknown("profile", "slow", ["quick", "standard", "full"]))
    assert msg == "unknown profile 'slow'; known: quick, standard, full"
    assert canonical("alpha_crown", ["ibp", "alpha-crown"]) == "alpha-crown"
    assert canonical("Gaussian-Noise", ["gaussian_noise"]) == "gaussian_noise"
    assert canonical("ig", ["integrated-gradients"], {"ig": "integrated-gradients"}) == (
        "integrated-gradients"
    )


def test_library_names_accept_either_spelling_and_suggest():
    from robustlab.attacks import get_attack, suite_attacks
    from robustlab.corruptions import corrupt
    from robustlab.jobs import parse_methods

    assert parse_methods("ibp,alpha_crown") == ["ibp", "alpha-crown"]
    assert get_attack("apgd_ce").name == "apgd-ce"
    with pytest.raises(RobustlabError, match="did you mean 'apgd-ce'"):
        get_attack("apgd")
    assert [n for n, _ in suite_attacks("autoattack", 10)] == [
        n for n, _ in suite_attacks("standard", 10)
    ]
    with pytest.raises(RobustlabError, match="did you mean 'gaussian_noise'"):
        corrupt(rl.load_data("digits").x[:2], "gausian_noise", 1)
    import torch

    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(
        corrupt(x, "gaussian-noise", 2, seed=0), corrupt(x, "gaussian_noise", 2, seed=0)
    )
    with pytest.raises(RobustlabError, match="did you mean 'crown'"):
        rl.certify("zoo:mlp", rl.load_data("digits").subset(2), rl.LpBall("inf", 0.01), "crwn")


def test_top_level_attribute_typo_suggests():
    with pytest.raises(AttributeError, match="did you mean 'run_attack'"):
        rl.run_atack  # noqa: B018


def test_certify_default_is_shared_by_cli_and_python():
    from robustlab import cli
    from robustlab.bounds import certify

    py = inspect.signature(certify).parameters["method"].default
    option = inspect.signature(cli.certify).parameters["method"].default
    assert py == option.default == "crown"


def test_version(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"robustlab {rl.__version__}"


def test_cli_typo_is_one_line_with_a_suggestion(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(
        monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data", "digits", "--eps",
        "0.01", "--method", "alpha-crwn", "--n", "2", "--out", tmp_path / "c.json",
    )  # fmt: skip
    assert code == 2 and "did you mean 'alpha-crown'?" in err and len(err.splitlines()) == 1
