"""A reverse-mode computational graph on NumPy arrays, in the spirit of micrograd.

Each Node holds its forward value, the operation that made it (`op`, empty for an input) and, for each
parent, the vector-Jacobian product that maps the gradient arriving at the node to the gradient for
that parent. `backward` visits the nodes in reverse
topological order, so a node's gradient is complete (summed over all its consumers: x feeds both
branches) before it is passed on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mnist_study.manual_backprop.closed_form import Combine, sigmoid

VJP = Callable[[np.ndarray], np.ndarray]


class Node:
    def __init__(self, value: np.ndarray, parents: Sequence[Node] = (), vjps: Sequence[VJP] = (), op: str = "") -> None:
        self.value = np.asarray(value)
        self.parents, self.vjps, self.op = tuple(parents), tuple(vjps), op
        self.grad: np.ndarray | None = None

    def __matmul__(self, other: Node) -> Node:
        vjps = (lambda g: g @ other.value.T, lambda g: self.value.T @ g)
        return Node(self.value @ other.value, (self, other), vjps, op="matmul")

    def __mul__(self, other: Node) -> Node:
        vjps = (lambda g: g * other.value, lambda g: g * self.value)
        return Node(self.value * other.value, (self, other), vjps, op="mul")

    def __add__(self, other: Node) -> Node:
        return Node(self.value + other.value, (self, other), (lambda g: g, lambda g: g), op="add")

    def sigmoid(self) -> Node:
        s = sigmoid(self.value)
        return Node(s, (self,), (lambda g: g * s * (1.0 - s),), op="sigmoid")

    def mean_squared_norm(self) -> Node:
        """(1/N) sum of squares over a K x N value: the loss, a scalar."""
        scale = 1.0 / self.value.shape[1]
        vjps = (lambda g: g * 2.0 * scale * self.value,)
        return Node(np.sum(self.value**2) * scale, (self,), vjps, op="mean_squared_norm")

    def topological_order(self) -> list[Node]:
        """Every node this one depends on, itself last, each after all of its parents."""
        order: list[Node] = []
        seen: set[int] = set()

        def visit(node: Node) -> None:  # depth-first post-order: parents before children
            if id(node) in seen:
                return
            seen.add(id(node))
            for parent in node.parents:
                visit(parent)
            order.append(node)

        visit(self)
        return order

    def backward(self) -> None:
        order = self.topological_order()
        for node in order:
            node.grad = None
        self.grad = np.ones_like(self.value)
        for node in reversed(order):
            for parent, vjp in zip(node.parents, node.vjps, strict=True):
                contribution = vjp(node.grad)
                parent.grad = contribution if parent.grad is None else parent.grad + contribution


def build(a: np.ndarray, b: np.ndarray, c: np.ndarray, x: np.ndarray, combine: Combine = "mul") -> dict[str, Node]:
    """The study's graph; returns every node by name so callers can read values and gradients."""
    nodes = {"A": Node(a), "B": Node(b), "C": Node(c), "x": Node(x)}
    nodes["y"] = nodes["A"] @ nodes["x"]
    nodes["u"] = nodes["y"].sigmoid()
    nodes["v"] = nodes["B"] @ nodes["x"]
    nodes["z"] = nodes["u"] * nodes["v"] if combine == "mul" else nodes["u"] + nodes["v"]
    nodes["w"] = nodes["C"] @ nodes["z"]
    nodes["L"] = nodes["w"].mean_squared_norm()
    return nodes


def loss_and_gradients(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, x: np.ndarray, combine: Combine = "mul"
) -> tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    nodes = build(a, b, c, x, combine)
    nodes["L"].backward()
    return float(nodes["L"].value), (nodes["A"].grad, nodes["B"].grad, nodes["C"].grad)
