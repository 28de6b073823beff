"""Backpropagation by hand for y=Ax, u=sigma(y), v=Bx, z=u*v, w=Cz, L=||w||^2: no Lightning.

closed_form: the chain rule written out, once for NumPy arrays and torch tensors (backends: torch with
autograd off); graph: a small reverse-mode engine (NumPy); autograd_reference: the same function in
torch; descent: gradient descent with both, side by side; config: q1's typed config; app, report,
figures: `python q1.py` and its report (benchmarks/q1_backward.py times the backward passes).
"""
