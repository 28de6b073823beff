"""What `python q1.py` leaves behind: each K's TensorBoard chart with both runs, and report.md with its figures."""

import re
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_study.manual_backprop import graph
from mnist_study.manual_backprop.descent import HISTORY_FILE, History, Settings, initial_values
from mnist_study.manual_backprop.figures import graph_k, graph_layout, job_title, plot_losses
from mnist_study.manual_backprop.report import FIGURES, GRAPH_FIGURE, REPORT_FILE, publish, write_report

from .conftest import ROOT, built_once, run_script

SWEPT_K = (2, 3, 5)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny q1 sweep, shared by every test here."""

    def run_q1(folder: Path) -> None:
        k_values = ",".join(map(str, SWEPT_K))
        result = run_script("q1.py", f"k={k_values}", "epochs=5", f"hydra.sweep.dir={folder / 'sweep'}", cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert "A (manual)" in result.stdout and "A (autograd)" in result.stdout

    return built_once(tmp_path_factory, "q1-sweep", run_q1) / "sweep"


def histories(sweep_dir: Path) -> list[History]:
    return [History.load(p) for p in sorted(sweep_dir.glob(f"*/{HISTORY_FILE}"))]


def scalar_tags(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_each_k_has_its_own_loss_chart_holding_the_manual_and_autograd_runs(sweep: Path) -> None:
    runs_by_tag: dict[str, set[str]] = {}
    for events_file in sweep.glob("**/events.out.tfevents.*"):
        run = events_file.parent.relative_to(sweep).as_posix()
        for tag in scalar_tags(events_file.parent):
            runs_by_tag.setdefault(tag, set()).add(run)
    for k in SWEPT_K:
        job = f"epochs=5,k={k}"  # named by the job's overrides
        assert runs_by_tag[f"z_q1/loss_k={k}"] == {f"{job}/manual", f"{job}/autograd"}
        history = History.load(sweep / job / HISTORY_FILE)
        np.testing.assert_allclose(
            scalar_tags(sweep / job / "manual")[f"z_q1/loss_k={k}"], history.loss_manual, rtol=1e-6
        )
        np.testing.assert_allclose(
            scalar_tags(sweep / job / "autograd")[f"z_q1/loss_k={k}"], history.loss_autograd, rtol=1e-6
        )
    assert runs_by_tag["z_q1/diff_max_rel_grad"] == {f"epochs=5,k={k}" for k in SWEPT_K}


def test_q1s_tensorboard_group_sorts_after_the_studys(sweep: Path) -> None:
    """One TensorBoard on a folder that holds the study and q1 (tensorboard --logdir outputs) expands the first two
    groups of Time Series, sorted by name: they stay the study's train/ and val/."""
    groups = {
        tag.split("/", 1)[0] for events in sweep.glob("**/events.out.tfevents.*") for tag in scalar_tags(events.parent)
    }
    study = {"train", "val", "val_best", "val_by_model", "val_by_regularizer", "val_vs_train"}
    assert groups == {"z_q1"} and sorted(study | groups)[:2] == ["train", "val"]
    assert sorted(study | groups)[-1] == "z_q1"


def test_the_report_and_its_figures_lie_in_the_sweep_folder(sweep: Path) -> None:
    text = (sweep / REPORT_FILE).read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(FIGURES)
    for figure in FIGURES:
        assert (sweep / figure).stat().st_size > 10_000, figure
    for expected in ("`python q1.py k=2,3,5 epochs=5`", "torch ", "NumPy ", "| backend | numpy |", "| epochs | 5 |"):
        assert expected in text


def test_the_report_table_lists_every_k_with_both_losses_and_the_gradient_differences(sweep: Path) -> None:
    text = (sweep / REPORT_FILE).read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row[0]) for row in rows] == list(SWEPT_K)
    for row, history in zip(rows, histories(sweep), strict=True):
        cells = [float(cell) for cell in row[1:]]
        assert cells[:4] == pytest.approx(
            [history.loss_manual[0], history.loss_autograd[0], history.loss_manual[-1], history.loss_autograd[-1]],
            rel=1e-5,
        )
        assert cells[4] == pytest.approx(max(history.max_abs_grad_diff), rel=0.01)
        assert cells[5] == pytest.approx(max(history.max_rel_grad_error), rel=0.01) and cells[5] < 1e-10
    for k in SWEPT_K:  # the optimized A as text up to K = 4 (larger ones only in the figure)
        assert (f"K={k}:\n\n```\nA (manual)" in text) == (k <= 4)


def test_the_graph_drawing_holds_the_engines_own_nodes_and_edges(sweep: Path) -> None:
    nodes = graph.build(*initial_values(Settings(k=3, n_samples=2)))
    layout = graph_layout(nodes, k=3, n_samples=2)
    assert set(layout.labels) == set(nodes)
    names = {id(node): name for name, node in nodes.items()}
    assert sorted(layout.edges) == sorted((names[id(p)], name) for name, node in nodes.items() for p in node.parents)
    for parent, child in layout.edges:  # columns follow the topological order
        assert layout.positions[parent][0] < layout.positions[child][0]
    assert layout.labels["z"] == "z = u ⊙ v\nK × N" and layout.labels["L"] == "L = mean ‖w‖²\nscalar"
    assert layout.labels["A"] == "A\nK × K" and layout.outputs == {"L"}
    report = (sweep / REPORT_FILE).read_text()
    assert f"({', '.join(layout.labels)})" in report  # the report names the nodes it drew


def test_the_loss_figure_gives_each_k_its_own_panel_and_log_scale(sweep: Path, tmp_path: Path) -> None:
    runs = histories(sweep)
    figure = plot_losses(runs, tmp_path / "loss.png")
    panels = {ax.get_title(): ax for ax in figure.axes}
    for history in runs:
        panel = panels[f"K={history.settings['k']}"]
        low, high = panel.get_ylim()
        assert panel.get_yscale() == "log"  # a loss falling by orders of magnitude is a line, not an "L"
        assert low <= min(history.loss_manual) and max(history.loss_manual) <= high
        assert high / low < 10 * max(history.loss_manual) / min(history.loss_manual)  # not another K's scale


def test_the_graph_is_drawn_for_a_k_that_ran() -> None:
    assert graph_k([8, 2, 4], n_samples=1) == 2  # the smallest K of python q1.py k=2,4,8
    assert graph_k([4, 8], n_samples=4) == 8  # K = N would make "K × N" and "K × K" look alike
    assert graph_k([64, 128], n_samples=1) == 3  # too large to draw: a small K (the title says the graph is K-free)


def test_a_sweep_over_more_than_k_names_each_job_by_its_swept_settings(sweep: Path, tmp_path: Path) -> None:
    runs = histories(sweep)
    runs[0].settings["lr"] = 0.5
    assert [job_title(h, runs) for h in runs] == ["K=2, lr=0.5", "K=3, lr=0.003", "K=5, lr=0.003"]
    text = write_report(runs, tmp_path, "python q1.py").read_text()
    assert "| K | job | loss at epoch 0" in text and "| 2 | lr=0.5 |" in text and "| lr | 0.003, 0.5 |" in text


def test_failed_jobs_are_listed_in_the_report(sweep: Path, tmp_path: Path) -> None:
    report = write_report(histories(sweep), tmp_path, "python q1.py k=2,3", ["k=3: k must be ..."])
    assert "## Failed jobs\n\n- k=3: k must be ...\n" in report.read_text()


def test_publish_prefixes_the_files_and_rewrites_the_links(sweep: Path, tmp_path: Path) -> None:
    published = publish(sweep, tmp_path, prefix="q1_")
    assert published == tmp_path / "q1_report.md"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", published.read_text())
    assert f"q1_{GRAPH_FIGURE}" in links and all((tmp_path / link).is_file() for link in links)
