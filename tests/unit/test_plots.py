"""`flowtune plots` (flows/ops/plots.py): the page holds what the stages wrote, embeds its JavaScript, and says
plainly when there is nothing to draw."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.cli.main import main
from tasks.params import load_params
from tests.helpers import ROOT


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A folder with the default params and the paths the train and evaluate stages write."""
    params = load_params(ROOT / "params.yaml")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    return params


def write_outputs(params, curve: bool = True, confusion: bool = True) -> None:
    if curve:
        Path(params.paths.train_plots).parent.mkdir(parents=True, exist_ok=True)
        Path(params.paths.train_plots).write_text("epoch,train_loss,dev_f1\n1,0.9,0.31\n2,0.5,0.47\n3,0.4,\n")
    if confusion:
        Path(params.paths.confusion).parent.mkdir(parents=True, exist_ok=True)
        Path(params.paths.confusion).write_text("actual,predicted\nperson,person\nperson,(missed)\n"
                                                "(spurious),geo-loc\ngeo-loc,geo-loc\n")


def figures(page: str) -> list[dict]:
    """The data of each plotly figure in the page (the JSON passed to Plotly.newPlot)."""
    return [json.loads(match) for match in re.findall(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', page, re.S)]


def test_the_page_draws_the_curve_and_the_confusion_counts_and_needs_no_network(checkout, capsys):
    write_outputs(checkout)
    assert main(["plots", "--out", "out/plots.html"]) == 0
    assert "training curve, confusion -> out/plots.html" in capsys.readouterr().out
    page = open("out/plots.html", encoding="utf-8").read()
    assert "<script src=" not in page  # plotly's JavaScript is in the page, nothing loads from elsewhere
    curve, confusion = figures(page)
    assert [trace["y"] for trace in curve] == [[0.9, 0.5, 0.4], [0.31, 0.47, None]]  # epoch 3: no dev score
    heatmap = confusion[0]
    labels = heatmap["x"]
    counts = {(gold, predicted): heatmap["z"][i][j]
              for i, gold in enumerate(labels) for j, predicted in enumerate(labels)}
    assert counts[("person", "person")] == 1 and counts[("person", "(missed)")] == 1
    assert counts[("(spurious)", "geo-loc")] == 1 and sum(map(sum, heatmap["z"])) == 4


def test_a_checkout_without_a_run_gets_an_error_naming_the_files_and_no_page(checkout, capsys):
    assert main(["plots", "--out", "out/plots.html"]) == 1
    error = capsys.readouterr().err
    assert checkout.paths.train_plots in error and checkout.paths.confusion in error and "flowtune run" in error
    assert not Path("out").exists()  # nothing written, not even the folder


def test_only_the_curve_is_drawn_when_evaluate_has_not_run(checkout, capsys):
    write_outputs(checkout, confusion=False)
    assert main(["plots", "--out", "plots.html"]) == 0
    assert "training curve -> plots.html" in capsys.readouterr().out
    assert len(figures(open("plots.html", encoding="utf-8").read())) == 1


def test_a_curve_file_without_its_columns_is_refused_naming_the_file_and_the_columns(checkout, capsys):
    write_outputs(checkout, confusion=False)
    Path(checkout.paths.train_plots).write_text("step,loss\n1,0.5\n")
    assert main(["plots", "--out", "plots.html"]) == 1
    error = capsys.readouterr().err
    assert checkout.paths.train_plots in error and "epoch, train_loss, dev_f1" in error and "lacks epoch" in error
    assert not Path("plots.html").exists()
