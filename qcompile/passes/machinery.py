"""The machinery every qcompile pass shares (not a pass): match a dataflow pattern at a call,
rewrite it.

A pass supplies `rewrite(ctx, call) -> Expr | None`.  `ctx.match(pattern, call)` looks through
the function's bindings (relax.dpl patterns with var2val); `ctx.new(expr)` maps an original
sub-expression into the rewritten function; `ctx.call_te` emits a TE kernel as a PrimFunc.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..errors import QCompileError


@mutator
class _CallRewriter(PyExprMutator):
    def __init__(self, mod, rewrite):
        super().__init__(mod)
        self.rewrite = rewrite
        self.var2val = {}
        self.val2var = {}  # a bound value -> its variable: what `new` reuses
        self.error = None  # a QCompileError from `rewrite`, re-raised by run_rewrite
        self.uses = {}     # a variable -> how many bindings (and the function's result) read it

    def visit_call_(self, call):
        if self.error is None:
            try:
                new = self.rewrite(self, call)
            except QCompileError as err:
                # raised through TVM's C++ visitor it would reach the user as a RuntimeError
                self.error, new = err, None
            if new is not None:
                return new
        return self.visit_expr_post_order(call)

    # -- helpers for rewrite functions --------------------------------------------------
    def match(self, pattern, expr):
        """Matched sub-expressions by pattern, or None (looks through let-bindings)."""
        return pattern.extract_matched_expr(expr, self.var2val)

    def new(self, expr):
        """The rewritten counterpart of an original sub-expression.

        `match` looks through bindings, so it hands back bound values; rewriting such a value
        again would compute it once more (a max pool feeding a conv and a residual add ran
        twice), so a bound value maps to its variable's counterpart instead."""
        var = self.val2var.get(expr)
        return self.visit_expr(expr if var is None else var)

    def call_te(self, fn, *args, **kwargs):
        """Emit a TE kernel as a PrimFunc and return the call_tir to it."""
        return self.builder_.call_te(fn, *args, **kwargs)

    def emit(self, expr):
        return self.builder_.emit(expr)

    def users(self, expr) -> int:
        """How many bindings (and the function's result) read the value `expr` (a bound value
        or its variable); 0 for an expression that is not bound."""
        var = self.val2var.get(expr, expr)
        return self.uses.get(var, 0)

    def value_of(self, expr):
        """Follow variable bindings to the bound expression."""
        while isinstance(expr, relax.Var) and expr in self.var2val:
            expr = self.var2val[expr]
        return expr


def _count_uses(func: relax.Function, var2val: dict) -> dict:
    """Each variable of `func` -> how many times its bound values (`var2val`) and its result
    read it."""
    uses = {}

    def visit(expr):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    for value in var2val.values():
        relax.analysis.post_order_visit(value, visit)
    relax.analysis.post_order_visit(func.body.body, visit)
    return uses


def run_rewrite(mod: tvm.IRModule, rewrite: Callable) -> tvm.IRModule:
    """Apply `rewrite` to every call of every Relax function, then drop what became dead."""
    rewriter = _CallRewriter(mod, rewrite)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.var2val = relax.analysis.get_var2val(func)
            rewriter.val2var = {val: var for var, val in rewriter.var2val.items()}
            rewriter.uses = _count_uses(func, rewriter.var2val)
            new_func = rewriter.visit_expr(func)
            if rewriter.error is not None:
                raise rewriter.error
            rewriter.builder_.update_func(gvar, new_func)
    mod = rewriter.builder_.get()
    return relax.transform.DeadCodeElimination()(mod)


def const_value(expr, ctx=None) -> np.ndarray:
    """The numpy value of a constant, looking through bindings, astype and reshape.

    Scales are held as astype(float64 constant) and per-channel ones may be reshaped for
    broadcasting; the value returned is the constant's own (the double, unreshaped)."""
    if ctx is not None:
        expr = ctx.value_of(expr)
    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    if isinstance(expr, relax.Call) and expr.op.name in ("relax.astype", "relax.reshape"):
        return const_value(expr.args[0], ctx)
    raise ValueError(f"expected a constant, got {expr}")
