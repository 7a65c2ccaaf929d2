"""Records round trip, plots and the ``adaptopt smoothness`` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from adaptopt.cli.main import main
from adaptopt.smoothness import GLOBAL, SmoothnessRecords, fit_records, plot_records, read_records
from adaptopt.smoothness.records import append_rows


def synthetic_rows() -> list[dict]:
    """Rows obeying y = 1 + 2x globally and y = 3x per coordinate of two layers."""
    rng = np.random.default_rng(0)
    rows = []
    for step in range(0, 50, 5):
        x = float(rng.lognormal())
        rows.append({"step": step, "layer": GLOBAL, "quantity": "norm", "grad": x,
                     "smoothness": 1 + 2 * x, "update": 0.1})  # fmt: skip
        for layer, j in (("enc.weight", 3), ("dec.bias", 0)):
            x = float(rng.lognormal())
            rows.append({"step": step, "layer": layer, "quantity": "coord", "index": j,
                         "grad": x, "smoothness": 3 * x, "update": 0.01})  # fmt: skip
    return rows


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "run" / "smoothness.jsonl"
    rows = synthetic_rows()
    append_rows(path, rows[:7])
    append_rows(path, rows[7:])  # appending continues the file
    return path


def test_round_trip_and_csv(records_file, tmp_path):
    rows = synthetic_rows()
    records = read_records(records_file.parent)  # a run directory works too
    assert len(records) == len(rows)
    assert records.step.tolist() == [r["step"] for r in rows]
    assert records.index.tolist() == [r.get("index", -1) for r in rows]
    assert records.layers() == [GLOBAL, "enc.weight", "dec.bias"]
    coord = records.select(quantity="coord", layer="dec.bias")
    assert coord.grad.tolist() == [r["grad"] for r in rows if r["layer"] == "dec.bias"]
    records.to_csv(tmp_path / "s.csv")
    with open(tmp_path / "s.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(r["smoothness"]) for r in table] == records.smoothness.tolist()
    assert SmoothnessRecords.from_rows(rows).layer.tolist() == records.layer.tolist()


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no smoothness records"):
        read_records(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_records(bad)
    bad.write_text('{"step": 0, "layer": "__global__"}\n')
    with pytest.raises(ValueError, match="missing field 'quantity'"):
        read_records(bad)
    with pytest.raises(ValueError, match="quantity"):
        SmoothnessRecords.from_rows(synthetic_rows()).select(quantity="hessian")


def test_plots_draw_the_fitted_line(records_file, tmp_path):
    records = read_records(records_file)
    fig = plot_records(records, path=tmp_path / "global.png")
    assert (tmp_path / "global.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (line,) = fig.axes[0].get_lines()
    xs, ys = line.get_data()
    assert np.allclose(ys, 1 + 2 * np.asarray(xs), rtol=1e-9)
    fig = plot_records(records, quantity="coord")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["enc.weight", "dec.bias"]
    xs, ys = panels[1].get_lines()[0].get_data()
    assert np.allclose(ys, 3 * np.asarray(xs), rtol=1e-9)
    with pytest.raises(ValueError, match="no 'coord' rows for layers"):
        plot_records(records, quantity="coord", layers=["nope"])


def test_cli_fit_and_plot(records_file, capsys):
    assert main(["smoothness", "fit", str(records_file), "--quantity", "coord", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = fit_records(read_records(records_file), "coord")
    assert printed["enc.weight"]["L1"] == pytest.approx(expected["enc.weight"].L1)
    assert printed.keys() == expected.keys()
    assert main(["smoothness", "fit", str(records_file)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["layer", "L0", "L1", "covered", "n"]
    assert table[1].split()[:3] == [GLOBAL, "1", "2"] and table[1].split()[-1] == "10"
    assert main(["smoothness", "plot", str(records_file.parent), "--quantity", "coord"]) == 0
    assert (records_file.parent / "smoothness_coord.png").is_file()
    assert main(["smoothness", "fit", str(records_file), "--layer", "nope"]) == 2
    assert "no 'norm' rows for layers ['nope']" in capsys.readouterr().err
