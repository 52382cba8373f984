"""Pass (on the fused module): activations passed from one channel-lane conv to another are
kept in a channel-blocked layout [N, C/B, H, W, B] instead of NCHW.

A channel-lane conv (pack_layout's "conv2d_packed") accumulates B output channels of one pixel
per vector register.  Writing NCHW, its epilogue gathers each output vector lane by lane (a
transposition); writing [N, C/B, H, W, B] it stores the register as it is.  The next conv then
packs its input from that layout: with the packed layout [N, C/B, H+pad, W+pad, B] too, the pack
is a padded copy of B-byte pixels, and the reduction reads its `in_block` channels at
(c % (B / in_block)) * in_block inside a pixel's block.

A tensor is blocked when it is produced by a fused channel-lane conv and every use is an
argument of one (its pack reads it, or its epilogue's residual add does): anything else (a
pool, the function's output, a pixel-lane conv) keeps reading NCHW, so the layout never leaks
out of the conv chain and no layout transform is inserted anywhere.  Only the memory order
changes; the arithmetic is the same, bit for bit.

The PrimFuncs are rewritten with TVM's own `transform_layout` / `transform_block_layout`
(tvm.s_tir.Schedule) before they are scheduled or tuned: a call that needs another layout gets
its own copy of the function.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..schedules.common import find_block, reads_blocked

CONV_BLOCK = "conv2d_packed"


def _blocks(sch):
    return sch.get_child_blocks(sch.get_sblock("root"))


def _shape(buf) -> list[int]:
    return [int(d) for d in buf.shape]


def _blocked_map(block: int):
    return lambda n, c, y, x: (n, c // block, y, x, c % block)


def _block_func(func: tirx.PrimFunc, inputs: tuple, output: bool, block: int) -> tirx.PrimFunc:
    """`func` with its parameters `inputs` (indices) and, if `output`, its last parameter
    (the output) in the blocked layout."""
    sch = s_tir.Schedule(func)
    m = _blocked_map(block)
    params = list(func.params)  # buffer vars
    for index in inputs:
        buf = params[index]
        for b in _blocks(sch):
            reads = sch.get(b).reads
            k = next((k for k, r in enumerate(reads) if r.source.same_as(buf)), None)
            if k is not None:
                sch.transform_layout(b, ("read", k), m)
                break
    pack = find_block(sch, "pack_data")
    if pack is not None and reads_blocked(sch, pack):
        # the conv's input is blocked: its packed input [N, C/ib, Hp, Wp, ib] becomes
        # [N, C/B, Hp, Wp, B] too, iterated in that order (a B-byte copy per pixel)
        ib = _shape(sch.get(pack).writes[0].source)[-1]
        q = block // ib
        repack = lambda n, cb, y, x, ci: (n, cb // q, y, x, (cb % q) * ib + ci)  # noqa: E731
        sch.transform_layout(pack, ("write", 0), repack)
        sch.transform_block_layout(pack, repack)
    if output:
        out_shape = _shape(params[-1])
        # the writer and every elementwise block of the output's shape before it (unpack,
        # requantize, ...) iterate the blocked order, so inlined they stay one vector loop
        for b in _blocks(sch):
            stmt = sch.get(b)
            if (len(stmt.iter_vars) == 4 and len(stmt.writes) == 1
                    and _shape(stmt.writes[0].source) == out_shape):
                sch.transform_layout(b, ("write", 0), m)
                sch.transform_block_layout(b, m)
    return sch.mod["main"]


def _conv_calls(main: relax.Function, mod: tvm.IRModule):
    """(call_tir bindings of channel-lane conv functions, every var used elsewhere)."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    convs, other_uses, is_conv = {}, set(), {}

    def visit(binding):
        value = binding.value
        if isinstance(value, relax.Call) and value.op.same_as(call_tir):
            gv = value.args[0]
            if gv not in is_conv:  # one look per function, however many calls it has
                func = mod[gv]
                is_conv[gv] = (isinstance(func, tirx.PrimFunc)
                               and find_block(s_tir.Schedule(func), CONV_BLOCK) is not None)
            if is_conv[gv]:
                convs[binding.var] = value
                return
        other_uses.update(relax.analysis.free_vars(value))

    for blk in main.body.blocks:
        for binding in blk.bindings:
            visit(binding)
    other_uses.update(relax.analysis.free_vars(main.body.body))
    return convs, other_uses


def plan(convs: dict, other_uses: set, block: int) -> set:
    """The conv outputs (relax vars) that can be kept blocked: uint8 NCHW with whole blocks
    of channels, read by channel-lane convs only (`convs`, `other_uses`: _conv_calls')."""
    conv_args = {arg for call in convs.values() for arg in call.args[1].fields}
    return {var for var in convs
            if var in conv_args and var not in other_uses and var.ty.ndim == 4
            and var.ty.dtype == "uint8" and int(var.ty.shape[1]) % block == 0}


@mutator
class _Relayout(PyExprMutator):
    def __init__(self, mod, calls: dict, block: int):
        super().__init__(mod)
        self.calls = calls  # original call -> (inputs, output)
        self.block = block
        self.made = {}

    def _func(self, gv, inputs, output):
        key = (gv, inputs, output)
        if key not in self.made:
            func = _block_func(self.builder_.get()[gv], inputs, output, self.block)
            suffix = "_blk" + "".join(map(str, inputs)) + ("o" if output else "")
            self.made[key] = self.builder_.add_func(func, gv.name_hint + suffix)
        return self.made[key]

    def visit_call_(self, call):
        if call in self.calls:
            inputs, output = self.calls[call]
            args = [self.visit_expr(a) for a in call.args[1].fields]
            out = call.ty_args[0]
            if output:
                n, c, h, w = (int(d) for d in out.shape)
                out = relax.TensorType((n, c // self.block, h, w, self.block), out.dtype)
            gv = self._func(call.args[0], inputs, output)
            return relax.call_tir(gv, relax.Tuple(args), out)
        return super().visit_call_(call)


def block_activations(mod: tvm.IRModule, block: int) -> tvm.IRModule:
    """Keep conv-to-conv activations in [N, C/block, H, W, block] (see the module docstring)."""
    convs, other_uses = _conv_calls(mod["main"], mod)
    chosen = plan(convs, other_uses, block)
    if not chosen:
        return mod
    calls = {}
    for var, call in convs.items():
        inputs = tuple(i for i, a in enumerate(call.args[1].fields) if a in chosen)
        if inputs or var in chosen:
            calls[call] = (inputs, var in chosen)
    mutator_ = _Relayout(mod, calls, block)
    new_main = mutator_.visit_expr(mod["main"])
    mutator_.builder_.update_func(mod.get_global_var("main"), new_main)
    return relax.transform.DeadCodeElimination()(mutator_.builder_.get())


def pass_for(block: int) -> tvm.transform.Pass:
    """block_activations as a module pass (for a pass pipeline)."""
    @tvm.transform.module_pass(opt_level=0, name="qcompile.BlockActivations")
    def _pass(mod, _ctx):
        return block_activations(mod, block)
    return _pass
