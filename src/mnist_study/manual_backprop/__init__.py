"""Backpropagation by hand for y=Ax, u=sigma(y), v=Bx, z=u*v, w=Cz, L=||w||^2: NumPy only, no Lightning.

closed_form: the chain rule written out; graph: a small reverse-mode engine; autograd_reference: the
same function in torch; descent: gradient descent with both, side by side; app: `python q1.py`.
"""
