"""q1's figures: the losses (one panel per K), the optimized A of both runs, and the computational
graph drawn from graph.py's own nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_study.manual_backprop import graph
from mnist_study.manual_backprop.descent import History, Settings, initial_values

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def by_k(histories: list[History]) -> list[History]:
    return sorted(histories, key=lambda h: (h.settings["k"], str(h.settings)))


def swept_besides_k(histories: list[History]) -> list[str]:
    return [key for key in histories[0].settings if key != "k" and len({str(h.settings[key]) for h in histories}) > 1]


def job_title(history: History, histories: list[History]) -> str:
    """K=4, or K=4, lr=0.1 where the sweep varies more than K."""
    swept = [f"{key}={history.settings[key]}" for key in swept_besides_k(histories)]
    return ", ".join([f"K={history.settings['k']}", *swept])


def plot_losses(histories: list[History], path: Path) -> Figure:
    """One panel per K, each with its own logarithmic scale (K=8 falls from about 1000 to 1e-4: on a linear
    scale, an "L"), and the relative gradient difference of every K in the last panel."""
    plt = pyplot()
    panels = len(histories) + 1
    columns = min(panels, 4)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    flat = list(axes.flat)
    error_ax = flat[len(histories)]
    for i, h in enumerate(by_k(histories)):
        ax, color, title = flat[i], f"C{i}", job_title(h, histories)
        ax.plot(h.loss_manual, color=color, lw=3, alpha=0.45, label="manual")
        ax.plot(h.loss_autograd, color="black", ls="--", lw=1, label="autograd")
        ax.set(title=title, xlabel="epoch", ylabel="loss  ‖Cz‖²")
        if min(h.loss_manual + h.loss_autograd) > 0:  # a loss of exactly 0 has no place on a log scale
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        error_ax.plot(h.max_rel_grad_error, color=color, label=title)
    error_ax.set(xlabel="epoch", ylabel="max relative difference", yscale="log", title="manual vs autograd gradients")
    error_ax.legend(fontsize=8)
    for ax in flat[len(histories) + 1 :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return fig


def plot_optimized_a(histories: list[History], path: Path) -> None:
    """Per K: the optimized A of the manual run, of the autograd run, and their difference."""
    plt = pyplot()
    rows = by_k(histories)
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.0 * len(rows)), squeeze=False)
    for row, h in zip(axes, rows, strict=True):
        manual, autograd = np.array(h.final_manual["A"]), np.array(h.final_autograd["A"])
        low, high = min(manual.min(), autograd.min()), max(manual.max(), autograd.max())
        k, job = h.settings["k"], job_title(h, histories)
        for ax, values, title in ((row[0], manual, "manual"), (row[1], autograd, "autograd")):
            image = ax.imshow(values, cmap="viridis", vmin=low, vmax=high)
            ax.set_title(f"{job}: A, {title}", fontsize=10)
            if k <= 4:
                middle = (low + high) / 2
                for (i, j), value in np.ndenumerate(values):
                    color = "black" if value > middle else "white"  # readable on viridis' yellow and purple
                    ax.text(j, i, f"{value:.4f}", ha="center", va="center", fontsize=8, color=color)
            fig.colorbar(image, ax=ax, fraction=0.046)
        difference = manual - autograd
        scale = max(float(np.abs(difference).max()), 1e-300)
        image = row[2].imshow(difference, cmap="RdBu", vmin=-scale, vmax=scale)
        row[2].set_title(f"{job}: manual − autograd", fontsize=10)
        fig.colorbar(image, ax=row[2], fraction=0.046, format="%.0e")
        for ax in row:
            ax.set(xticks=range(k), yticks=range(k))
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


@dataclass
class GraphLayout:
    """Where each of the engine's nodes goes: column = topological depth, and what its box says."""

    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)  # (parent, child), forward direction
    outputs: set[str] = field(default_factory=set)


SYMBOLS = {"matmul": "{0}{1}", "mul": "{0} ⊙ {1}", "add": "{0} + {1}", "sigmoid": "σ({0})"}


def shape_text(shape: tuple[int, ...], k: int, n_samples: int) -> str:
    if not shape:
        return "scalar"
    names = {k: "K", n_samples: "N"} if n_samples > 1 else {k: "K"}
    return " × ".join(names.get(size, str(size)) for size in shape)


def formula(name: str, node: graph.Node, names: dict[int, str]) -> str:
    parents = [names[id(parent)] for parent in node.parents]
    if not node.op:
        return name
    if node.op == "mean_squared_norm":
        return f"{name} = ‖{parents[0]}‖²" if node.parents[0].value.shape[1] == 1 else f"{name} = mean ‖{parents[0]}‖²"
    return f"{name} = " + SYMBOLS[node.op].format(*parents)


def graph_layout(nodes: dict[str, graph.Node], k: int, n_samples: int) -> GraphLayout:
    """Lay out the graph that ends at the node without consumers, walking the nodes' parents."""
    names = {id(node): name for name, node in nodes.items()}
    consumed = {id(parent) for node in nodes.values() for parent in node.parents}
    outputs = [node for node in nodes.values() if id(node) not in consumed]
    order = [node for output in outputs for node in output.topological_order()]
    children: dict[int, list[graph.Node]] = {id(node): [] for node in order}
    depth: dict[int, int] = {}
    for node in order:
        depth[id(node)] = 1 + max((depth[id(parent)] for parent in node.parents), default=-1)
        for parent in node.parents:
            children[id(parent)].append(node)
    for node in reversed(order):  # an input sits just before its first consumer (C right before w = Cz)
        if not node.parents:
            depth[id(node)] = min(depth[id(child)] for child in children[id(node)]) - 1
    layout = GraphLayout(outputs={names[id(node)] for node in outputs})
    heights: dict[int, list[float]] = {}
    rank = {id(node): i for i, node in enumerate(order)}  # x lands between A and B: fewer crossings
    for node in sorted(order, key=lambda n: (depth[id(n)], rank[id(n)])):
        column = depth[id(node)]
        taken = heights.setdefault(column, [])
        if node.parents:  # between its parents, which sit in earlier columns
            height = float(np.mean([layout.positions[names[id(parent)]][1] for parent in node.parents]))
        else:
            height = float(-len(taken))
        while any(abs(height - other) < 0.8 for other in taken):
            height += 1.0
        taken.append(height)
        name = names[id(node)]
        layout.positions[name] = (float(column), height)
        layout.labels[name] = f"{formula(name, node, names)}\n{shape_text(node.value.shape, k, n_samples)}"
        layout.edges.extend((names[id(parent)], name) for parent in node.parents)
    return layout


GRAPH_K_UP_TO = 8  # the graph is built with real arrays: a K that ran, if it is small


def graph_k(swept: list[int], n_samples: int) -> int:
    """The K to draw the graph at: the smallest K that ran, up to GRAPH_K_UP_TO and not equal to N (a shape
    would not say whether it is K or N); else 3 (4 when N = 3)."""
    fitting = [k for k in sorted(set(swept)) if k <= GRAPH_K_UP_TO and (n_samples == 1 or k != n_samples)]
    return fitting[0] if fitting else (3 if n_samples != 3 else 4)


def draw_graph(settings: dict[str, Any], path: Path, swept: list[int] | None = None) -> GraphLayout:
    """Build the study's graph with graph.py at a K that ran (graph_k of `swept`, default settings' K) and draw
    its nodes as laid out. The graph's nodes and edges are the same for every K; only the shapes grow."""
    n_samples = int(settings.get("n_samples", 1))
    k = graph_k(swept or [int(settings["k"])], n_samples)
    a, b, c, x = initial_values(Settings(k=k, n_samples=n_samples))
    nodes = graph.build(a, b, c, x, settings.get("combine", "mul"))
    layout = graph_layout(nodes, k, n_samples)

    plt = pyplot()
    columns = 1 + max(x for x, _ in layout.positions.values())
    heights = [y for _, y in layout.positions.values()]
    fig, ax = plt.subplots(figsize=(1.9 * columns, 1.0 + 1.1 * (max(heights) - min(heights) + 1)))
    boxes = {}
    for name, (x_pos, y_pos) in layout.positions.items():
        node = nodes[name]
        color = "#fde2c4" if name in layout.outputs else ("#dbe9f6" if node.parents else "#e8e8e8")
        boxes[name] = ax.text(
            x_pos, y_pos, layout.labels[name], ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": color, "edgecolor": "#555555"},
        )  # fmt: skip
    for parent, child in layout.edges:
        ax.annotate(
            "", xy=(0.0, 0.5), xycoords=boxes[child], xytext=(1.0, 0.5), textcoords=boxes[parent],
            arrowprops={"arrowstyle": "-|>", "color": "#333333", "shrinkA": 2, "shrinkB": 2},
        )  # fmt: skip
    ax.set_xlim(-0.6, columns - 0.4)
    ax.set_ylim(min(heights) - 0.7, max(heights) + 0.7)
    ax.axis("off")
    ax.set_title(
        f"The computational graph graph.py builds, drawn for K={k}, N={n_samples} (the same nodes for every K): "
        "forward along the arrows, gradients back against them",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return layout
