"""Tensor: a NumPy array plus the bookkeeping for reverse-mode automatic differentiation.

Every differentiable operation (ops.py) returns a new Tensor that remembers its parents and a
small ``_backward(g)`` function: given g, the gradient of the final loss with respect to this
tensor's output, it adds the gradient with respect to each parent into ``parent.grad``.

``loss.backward()`` then does two things, and nothing more:

1. sort the graph topologically, so a node comes after everything that uses it
   (iteratively -- a 1000-layer graph must not hit Python's recursion limit);
2. walk that order in reverse, calling each node's ``_backward``.

Gradients accumulate (``+=``) into leaves such as parameters, so calling backward() on several
micro-batches before one optimizer step sums their gradients. After backward the graph is freed:
intermediate activations and their gradients are released, only the leaves keep ``.grad``.

    >>> a = Tensor([2.0, 3.0], requires_grad=True)
    >>> y = (a * a).sum()            # y = a0^2 + a1^2
    >>> y.backward()
    >>> a.grad                       # dy/da = 2a
    array([4., 6.], dtype=float32)
"""

import numpy as np

_grad_enabled = True


class no_grad:
    """Context manager (and decorator) that stops graph recording: inference uses less memory.

        with no_grad():
            logits = model(ids).logits      # no parents kept, backward() impossible
    """

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = getattr(fn, "__doc__", None)
        return wrapper


def is_grad_enabled():
    return _grad_enabled


FLOAT_DTYPES = (np.float32, np.float64)


class Tensor:
    """A float32 NumPy array with autograd (float64 when asked for: gradient checks use it).

    Attributes
    ----------
    data : np.ndarray        the values
    grad : np.ndarray|None   d(loss)/d(data) after backward(); same shape and dtype as data
    requires_grad : bool     whether gradients flow to (and are kept for) this tensor
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op", "_retain",
                 "_grad_mine", "__weakref__")

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        arr = np.asarray(data)
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype.type not in FLOAT_DTYPES:
            raise TypeError(f"Tensor: dtype must be float32 or float64, got {dtype}")
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: cannot make a tensor from an array of dtype {arr.dtype}")
        self.data = np.asarray(arr, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self._op = ""
        self._retain = False
        self._grad_mine = False  # self.grad is an array no one else holds (see _accum)

    # -- construction used by ops ----------------------------------------------------------

    @classmethod
    def _from_op(cls, data, parents, backward, op):
        """The result of an op: records the graph only if some parent needs a gradient."""
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t._grad_mine = False
        t._op = op
        t._retain = False
        if _grad_enabled and any(p.requires_grad for p in parents):
            t.requires_grad = True
            t._parents = parents
            t._backward = backward
        else:
            t.requires_grad = False
            t._parents = ()
            t._backward = None
        return t

    def _accum(self, g, owned=False):
        """Add g into self.grad (the only way gradients are written).

        ``owned=True`` promises that g is a fresh array nobody else holds (a kernel's output),
        so a leaf can keep it as its .grad without a copy. Otherwise the first gradient a leaf
        receives is copied. subtle: an op's backward may hand the same array to two parents
        (``a + b`` gives both the same g); an in-place update of one parameter's grad (a second
        accumulation, clipping) must not change another's. A leaf's .grad is therefore always
        its own array, and later gradients are added into it in place. An interior tensor keeps
        the first g as it is; later ones are added in place only once its .grad is an array it
        alone holds (g was owned, or a first sum made a new one), which saves a (B, T, C)
        allocation per extra branch on the residual stream.
        """
        if not self.requires_grad:
            return
        if g.shape != self.data.shape:
            raise RuntimeError(f"autograd: gradient of shape {g.shape} for a tensor of shape "
                               f"{self.data.shape} (from op '{self._op or 'leaf'}')")
        leaf = self._backward is None
        if self.grad is None:
            mine = (owned and g.dtype == self.data.dtype and g.flags.c_contiguous
                    and g.flags.writeable)
            if leaf and not mine:
                self.grad = np.array(g, dtype=self.data.dtype, copy=True)
                mine = True
            else:
                self.grad = g
            self._grad_mine = mine
        elif leaf or self._grad_mine:
            self.grad += g
        else:
            self.grad = self.grad + g
            self._grad_mine = True

    def _leaf_grad(self):
        """This leaf's accumulated gradient, if a kernel may add into it in place (else None)."""
        if self._backward is None and self.requires_grad and self.grad is not None:
            return self.grad
        return None

    # -- autograd ----------------------------------------------------------------------------

    def backward(self, grad=None):
        """Backpropagate from this tensor through the graph that produced it.

        ``grad`` is d(loss)/d(self); it defaults to 1 for a single-element tensor (the loss).
        Afterwards leaves hold their gradients in ``.grad`` and the graph is freed.
        """
        if self._op == "<freed>":
            raise RuntimeError("backward: the graph behind this tensor was already freed by an "
                               "earlier backward(); run the forward pass again")
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (nothing it was "
                               "computed from has requires_grad=True, or it was computed under "
                               "no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: an implicit gradient needs a single-element "
                                   f"tensor (the loss), this one has shape {self.data.shape}; "
                                   "pass grad= explicitly")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad,
                              dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}, expected "
                                 f"{self.data.shape}")

        order = self._topological_order()
        uses = _leaf_uses(order) if _grad_final_hook is not None else None
        self._accum(grad)
        for node in reversed(order):
            g = node.grad
            if g is not None:
                node._backward(g)
            if uses is not None:
                _announce_final(node._parents, uses)
            # free the graph as we go: activations and intermediate grads are no longer needed
            node._backward = None
            node._parents = ()
            node._op = "<freed>"
            if not node._retain:
                node.grad = None

    def _topological_order(self):
        """Interior nodes (those with a _backward) in topological order, parents first.

        An iterative depth-first search with an explicit stack: each node is pushed once to
        expand its parents and once more to be emitted after all of them.
        """
        order, visited = [], set()
        if self._backward is None:  # a leaf: nothing to propagate
            return order
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            for p in node._parents:
                if p._backward is not None and id(p) not in visited:
                    stack.append((p, False))
        return order

    def retain_grad(self):
        """Keep .grad on this intermediate tensor after backward (for inspection)."""
        self._retain = True
        return self

    def detach(self):
        """The same data, cut off from the graph."""
        return Tensor._from_op(self.data, (), None, "detach")

    def requires_grad_(self, flag=True):
        if self._backward is not None and not flag:
            raise RuntimeError("requires_grad_: cannot switch off gradients on a non-leaf "
                               "tensor; use detach()")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self):
        self.grad = None
        self._grad_mine = False

    # -- NumPy-like conveniences ---------------------------------------------------------------

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def numpy(self):
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: tensor has {self.data.size} elements, expected 1")
        return self.data.reshape(()).item()

    def __float__(self):
        return float(self.item())

    def __len__(self):
        return len(self.data)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op}" if self._op and self._op != "<freed>" else ""
        body = np.array2string(self.data, precision=4, threshold=20, edgeitems=2)
        return f"Tensor({body}, shape={self.data.shape}, dtype={self.data.dtype}{grad}{op})"

    # The operators (a + b, a @ b, a[i], a.sum(), ...) are the ops in ops.py, which attaches
    # them to this class when it is imported (importing tinyroots does that).


def tensor(data, requires_grad=False, dtype=None):
    """Shorthand for Tensor(data, requires_grad, dtype)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# "this leaf's gradient is final": data-parallel training (distributed.py) starts sending a
# gradient to the other processes while the backward pass goes on

_grad_final_hook = None


class on_grad_final:
    """Context manager: during backward(), call fn(leaf) once a leaf's gradient is final.

    A leaf's gradient is final when every op that used it has run its backward: backward()
    counts the uses first and counts them down as it walks the graph.

        with on_grad_final(lambda p: print(p.shape)):
            loss.backward()          # prints each parameter's shape, last layer first
    """

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        global _grad_final_hook
        self._prev, _grad_final_hook = _grad_final_hook, self.fn
        return self

    def __exit__(self, *exc):
        global _grad_final_hook
        _grad_final_hook = self._prev
        return False


def _leaf_uses(order):
    uses = {}
    for node in order:
        for p in node._parents:
            if p._backward is None and p.requires_grad:
                uses[id(p)] = uses.get(id(p), 0) + 1
    return uses


def _announce_final(parents, uses):
    for p in parents:
        left = uses.get(id(p))
        if left is not None:
            uses[id(p)] = left - 1
            if left == 1:
                _grad_final_hook(p)
