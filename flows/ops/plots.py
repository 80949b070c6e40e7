"""`flowtune plots`: the training curve and the confusion matrix of the last run as one self-contained HTML page.

`dvc plots show` draws the same plots (dvc.yaml `plots:`), but its page loads Vega from a CDN, so on a machine
without the internet it opens blank. This page embeds plotly's JavaScript (a few MB, shipped in the plotly wheel):
it opens anywhere, offline included. It reads what the train and evaluate stages wrote (`paths.train_plots`,
`paths.confusion`) and draws what is there.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path


class PlotsError(ValueError):
    """Nothing to draw: no training curve and no confusion table (the pipeline has not run here)."""


COLUMNS = {"training curve": ("epoch", "train_loss", "dev_f1"), "confusion": ("actual", "predicted")}


def read_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The CSV's rows; PlotsError naming the file when its header lacks one of `columns` (a hand-edited or
    foreign file)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise PlotsError(f"{path}: expected a CSV with the columns {', '.join(columns)}; "
                             f"line 1 lacks {', '.join(missing)}")
        return list(reader)


def curve_figure(rows: list[dict[str, str]], score_label: str):
    """Train loss and dev score per epoch, one above the other (an epoch without dev rows has no score)."""
    from plotly.subplots import make_subplots

    epochs = [int(row["epoch"]) for row in rows]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("train loss", score_label))
    figure.add_scatter(x=epochs, y=[float(row["train_loss"]) for row in rows], mode="lines+markers",
                       name="train loss", row=1, col=1)
    scores = [float(row["dev_f1"]) if row["dev_f1"] else None for row in rows]
    figure.add_scatter(x=epochs, y=scores, mode="lines+markers", name=score_label, row=2, col=1)
    figure.update_xaxes(title_text="epoch", dtick=1, row=2, col=1)
    figure.update_layout(title="Training curve (the train stage)", height=600, showlegend=False)
    return figure


def confusion_figure(rows: list[dict[str, str]]):
    """Counts of (gold, predicted) pairs of the test split as a heatmap: the evaluate stage's confusion table,
    where "(missed)" and "(spurious)" stand for an entity on one side only."""
    import plotly.graph_objects as go

    pairs = Counter((row["actual"], row["predicted"]) for row in rows)
    labels = sorted({label for pair in pairs for label in pair})
    counts = [[pairs.get((gold, predicted), 0) for predicted in labels] for gold in labels]
    hover = "gold %{y}, predicted %{x}: %{z}<extra></extra>"
    figure = go.Figure(go.Heatmap(z=counts, x=labels, y=labels, colorscale="Blues", text=counts, texttemplate="%{text}",
                                  hovertemplate=hover))
    figure.update_layout(title="Confusion on the test split (the evaluate stage)", height=600,
                         xaxis_title="predicted", yaxis_title="gold", yaxis_autorange="reversed")
    return figure


def write_page(params, out: Path) -> list[str]:
    """Write the page; the names of the plots drawn. PlotsError when there is nothing to draw."""
    sources = {"training curve": Path(params.paths.train_plots), "confusion": Path(params.paths.confusion)}
    rows = {name: read_rows(path, COLUMNS[name]) for name, path in sources.items() if path.is_file()}
    drawn = [name for name in sources if rows.get(name)]
    if not drawn:
        raise PlotsError(f"nothing to draw: neither {sources['training curve']} nor {sources['confusion']} exists "
                         "(run the pipeline first: `flowtune run` or `dvc repro`)")
    figures = []
    if "training curve" in drawn:  # the dev score is the kind's selection score (train.json), whatever its name
        figures.append(curve_figure(rows["training curve"], "dev score (NER: entity F1; classification: macro-F1)"))
    if "confusion" in drawn:
        figures.append(confusion_figure(rows["confusion"]))
    body = [figure.to_html(full_html=False, include_plotlyjs=(index == 0)) for index, figure in enumerate(figures)]
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>flowtune plots</title></head>"
                         "<body>\n" + "\n".join(body) + "\n</body></html>\n", encoding="utf-8")
    temporary.replace(out)
    return drawn
