"""User mistakes end in one message and exit status 2; ``--debug`` and real bugs keep tracebacks."""

from __future__ import annotations

import pytest
import torch

import adaptopt
from adaptopt.cli import main as cli
from adaptopt.cli.main import main
from adaptopt.errors import ConfigError, RunExistsError, UserError


def train_args(tmp_path, *extra: str, task: str = "synthetic", optimizer: str = "sgd") -> list:
    return [
        "train",
        "--task",
        task,
        "--optimizer",
        optimizer,
        "--smoke",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        *extra,
    ]


def usage_error(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``; it must return 2 and print exactly one error line, no traceback."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("adaptopt: error: ")
    assert "Traceback" not in captured.err + captured.out
    return captured.err


def test_unknown_task(tmp_path, capsys):
    err = usage_error(capsys, train_args(tmp_path, task="cifar11-resnet"))
    assert "unknown task 'cifar11-resnet'; available: " in err and "synthetic" in err
    assert err.count("\n") == 1


def test_unknown_optimizer(tmp_path, capsys):
    err = usage_error(capsys, train_args(tmp_path, optimizer="adamm"))
    assert "unknown optimizer 'adamm'; valid: " in err and "gsignsgd" in err


@pytest.mark.parametrize(
    ("hparam", "message"),
    [
        ("lr=-1", "optimizer 'sgd': bad hyperparameter value: Invalid learning rate: -1"),
        ("momentum=[1, 2]", "optimizer 'sgd': bad hyperparameter value"),
        ("lrr=0.1", "unknown hyperparameter(s) lrr for optimizer 'sgd'; valid: lr,"),
    ],
)
def test_bad_hyperparameter(tmp_path, capsys, hparam, message):
    assert message in usage_error(capsys, train_args(tmp_path, "--hparam", hparam))


def test_bad_hyperparameter_value_of_each_adaptopt_optimizer():
    """Every constructor's own validation becomes a ConfigError at the registry."""
    for name in adaptopt.optim.available_optimizers():
        key = "lr" if "lr" in adaptopt.optim.hyperparameters(name) else "smoothness"  # SGDOL
        with pytest.raises(ConfigError, match=f"optimizer '{name}': bad hyperparameter value"):
            adaptopt.create_optimizer(name, [torch.zeros(2, requires_grad=True)], **{key: -1.0})


def test_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADAPTOPT_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    err = usage_error(capsys, train_args(tmp_path, task="fmnist-cnn"))
    assert "dataset 'fashion-mnist' not found." in err
    assert f"{tmp_path / 'empty'}  ($ADAPTOPT_DATA)" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task = 'synthetic'\n[optimizers.sgd\n", "is not valid TOML"),
        ("task = 'synthetic'\nseed = 3\n[optimizers.sgd]\nlr = 0.1\n", "unknown sweep key(s)"),
        ("task = 'synthetic'\n[optimizers.sgd.grid]\nlr = 0.1\n", "optimizers.sgd.grid.lr:"),
    ],
)
def test_bad_grid_file(tmp_path, capsys, text, message):
    spec = tmp_path / "grid.toml"
    spec.write_text(text)
    assert message in usage_error(capsys, ["sweep", str(spec), "--out", str(tmp_path / "s")])


def test_missing_grid_file(tmp_path, capsys):
    err = usage_error(capsys, ["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path)])
    assert "sweep file not found" in err


def test_existing_run_directory_without_resume(tmp_path, capsys):
    assert main(train_args(tmp_path)) == 0
    capsys.readouterr()
    err = usage_error(capsys, train_args(tmp_path))
    assert "already holds a run" in err
    assert main([*train_args(tmp_path), "--resume"]) == 0


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="unknown task"):
        main(["--debug", *train_args(tmp_path, task="nope")])
    with pytest.raises(ConfigError, match="unknown optimizer"):
        main([*train_args(tmp_path, optimizer="nope"), "--debug"])


def test_bugs_are_not_user_errors(tmp_path, monkeypatch):
    """Only UserError subclasses become exit 2: a ValueError from inside is a bug, kept as is."""

    def broken(*args, **kwargs):
        raise ValueError("shape mismatch deep inside")

    monkeypatch.setattr("adaptopt.cli.train.train", broken)
    with pytest.raises(ValueError, match="shape mismatch"):
        main(train_args(tmp_path))
    assert issubclass(RunExistsError, ConfigError) and issubclass(ConfigError, ValueError)
    assert not issubclass(ValueError, UserError)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out == f"adaptopt {adaptopt.__version__} (torch {torch.__version__})\n"
    assert adaptopt.__version__ == "0.1.0"


def test_command_list_has_one_module_each():
    parser = cli.build_parser()
    (subparsers,) = (a for a in parser._actions if a.dest == "command")
    assert list(subparsers.choices) == list(cli.COMMANDS)


def test_missing_extra_error_names_the_extra_and_pickles(monkeypatch):
    import pickle
    import sys

    from adaptopt._optional import MissingExtraError, require

    for module in ("matplotlib", "matplotlib.figure"):  # as if not installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as err:
        require("matplotlib.figure", feature="the plots")
    message = (
        "the plots needs the package 'matplotlib', which is not installed; "
        "install it with: pip install 'adaptopt[experiments]'"
    )
    assert str(err.value) == message and isinstance(err.value, UserError)
    assert str(pickle.loads(pickle.dumps(err.value))) == message
