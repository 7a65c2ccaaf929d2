from adaptopt.cli.main import main


def test_theorem1_command(tmp_path, capsys):
    argv = [
        "theory",
        "theorem1",
        "--L0",
        "1",
        "3",
        "--L1",
        "0.5",
        "2",
        "--sigma",
        "1",
        "--Delta",
        "9",
        "-T",
        "10000",
        "--beta2",
        "0.25",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| eta | 0.00045 |" in out and "| T_satisfied | False |" in out
    assert (tmp_path / "theorem1.png").exists() and (tmp_path / "theorem1.csv").exists()


def test_theorem1_command_rejects_bad_beta2(tmp_path, capsys):
    argv = [
        "theory",
        "theorem1",
        "--L0",
        "1",
        "--L1",
        "1",
        "--sigma",
        "1",
        "--Delta",
        "1",
        "-T",
        "10",
        "--beta2",
        "0.9",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "theorem1: beta2=0.9 violates" in capsys.readouterr().err


def test_scale_free_command(tmp_path, capsys):
    assert main(["theory", "scale-free", "--steps", "10", "--out", str(tmp_path)]) == 0
    assert "| Adam |" in capsys.readouterr().out
    assert (tmp_path / "scale_free.png").exists()


def test_gd_lower_bound_command_rejects_small_M(tmp_path, capsys):
    assert main(["theory", "gd-lower-bound", "--M", "0.5", "--out", str(tmp_path)]) == 2
    assert "gd-lower-bound: Theorem 2 needs M >=" in capsys.readouterr().err
