"""accelkernels.convert(model): swap torch's Conv2d/Linear layers for ours, in place, and optionally
fold the activation module that follows a layer into the layer's epilogue."""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap
import types
import warnings

import torch
import torch.fx

from . import nn as ak_nn
from .backends import check_name

_SWAPS = {torch.nn.Conv2d: ak_nn.Conv2d, torch.nn.Linear: ak_nn.Linear}
_LAYERS = (ak_nn.Conv2d, ak_nn.Linear)
# Activation modules whose forward is exactly our epilogue: exact types (a subclass may override
# forward). Our "gelu" is the exact erf form, so nn.GELU(approximate="tanh") is not one of them.
_ACTIVATIONS = {torch.nn.ReLU: "relu", torch.nn.GELU: "gelu", torch.nn.SiLU: "silu"}
# Hooks that would see a different value, or be dropped, once an activation is folded.
_OUTPUT_HOOKS = ("_forward_hooks", "_backward_hooks", "_backward_pre_hooks")
_ANY_HOOKS = _OUTPUT_HOOKS + ("_forward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
                              "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def _unservable_reason(module: torch.nn.Module) -> str | None:
    """Why a torch Conv2d/Linear (or subclass) cannot be swapped, or None."""
    if type(module) not in _SWAPS:
        # A subclass may override forward or be relied on by type (e.g. quantization's
        # NonDynamicallyQuantizableLinear); swapping it could change behaviour.
        base = "Conv2d" if isinstance(module, torch.nn.Conv2d) else "Linear"
        return f"{type(module).__qualname__} is a subclass of torch.nn.{base}, left as it is"
    if isinstance(module, torch.nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (only 'zeros' is served)"
    return None


def convert(model: torch.nn.Module, *, backend: str = "auto", fuse_activations: bool = False) -> torch.nn.Module:
    """Replace every ``nn.Conv2d`` and ``nn.Linear`` in ``model`` with accelkernels' layers, in place.

    Parameters are shared, not copied: outputs, gradients, optimizer state and state_dict keys stay
    the same, and torch checkpoints still load. A layer registered in several places (twice in one
    ``Sequential``, ``ModuleList([conv] * 3)``, two parents) becomes one converted layer in all of
    them. Modules that cannot be served (a non-zero ``padding_mode``, subclasses with their own
    behaviour) stay as they are and are listed in one warning. Returns ``model`` (itself replaced
    when it is a bare Conv2d or Linear).

    With ``fuse_activations=True``, an ``nn.ReLU``, ``nn.GELU()`` (the exact form, not
    ``approximate="tanh"``) or ``nn.SiLU`` module applied directly to a converted layer's output,
    and only to it, moves into the layer (``layer.activation``) and is replaced by ``nn.Identity()``:
    the same numbers and gradients, one pass over the output fewer. It is found in two places:

    - ``nn.Sequential`` (at any depth): a layer followed by an activation module. A layer that also
      appears elsewhere is fused only if every appearance is followed by the same activation.
    - any other module whose own ``forward`` is straight-line code (no ``if``/``while``/``try``,
      conditional expressions or ``and``/``or``, whose outcome a trace would freeze; ``for`` over its
      submodule containers is fine) calling only its submodules and torch: a ``torch.fx`` trace of
      that forward must show the layer called once, its output used only by the activation module,
      itself called once; each must be registered nowhere else in the model and carry no hooks.
      ``F.relu(self.conv(x))`` is not fused: that would mean rewriting ``forward``.

    Everything else is left as it is; nothing about fusion warns.
    """
    check_name(backend)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"accelkernels.convert expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(fuse_activations, bool):
        raise TypeError(f"accelkernels.convert: fuse_activations must be a bool, got {fuse_activations!r}")
    left: list[str] = []
    swapped: dict[int, torch.nn.Module] = {}  # a layer shared by several parents (or positions) stays shared

    def swap(name: str, module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, _LAYERS) or not isinstance(module, tuple(_SWAPS)):
            return module
        if id(module) in swapped:
            return swapped[id(module)]
        reason = _unservable_reason(module)
        if reason is not None:
            left.append(f"{name or '<model>'}: {reason}")
            swapped[id(module)] = module
            return module
        swapped[id(module)] = _SWAPS[type(module)].from_torch(module, backend=backend)
        return swapped[id(module)]

    # Every position, not named_children(): that skips a module already seen in the same parent
    # (Sequential(lin, act, lin)), which would leave the second position a torch layer.
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = swap(f"{parent_name}.{child_name}" if parent_name else child_name, child)
            if new is not child:
                setattr(parent, child_name, new)
    model = swap("", model)
    if left:
        warnings.warn(
            "accelkernels.convert left these modules unchanged:\n  " + "\n  ".join(left), UserWarning, stacklevel=2
        )
    if fuse_activations:
        _fuse_activations(model)
    return model


# --- fuse_activations ------------------------------------------------------------------------------


def _has_hooks(module: torch.nn.Module, names) -> bool:
    return any(getattr(module, name, None) for name in names)


def _activation_kind(module) -> str | None:
    kind = _ACTIVATIONS.get(type(module))
    if kind == "gelu" and module.approximate != "none":
        return None
    if kind is None or _has_hooks(module, _ANY_HOOKS):  # Identity would drop the hooks
        return None
    return kind


def _fusible_layer(module) -> bool:
    # A forward hook on the layer sees its output: fused, that output would be activated.
    return isinstance(module, _LAYERS) and module.activation is None and not _has_hooks(module, _OUTPUT_HOOKS)


def _fuse_activations(model: torch.nn.Module) -> None:
    modules = list(model.modules())  # each module object once, even when registered in several places
    where: dict[int, list[tuple[torch.nn.Module, str]]] = {}  # module -> every (parent, name) holding it
    for parent in modules:
        for name, child in parent._modules.items():
            if child is not None:
                where.setdefault(id(child), []).append((parent, name))

    # layer -> the activation positions its output feeds: (parent, name, kind), one per registration.
    plans: dict[int, tuple[torch.nn.Module, list[tuple[torch.nn.Module, str, str]]]] = {}
    for parent in modules:
        if isinstance(parent, torch.nn.Sequential) and type(parent).forward is torch.nn.Sequential.forward:
            items = list(parent._modules.items())
            for (_, layer), (act_name, act) in zip(items, items[1:]):
                kind = _activation_kind(act)
                if kind is not None and _fusible_layer(layer):
                    plans.setdefault(id(layer), (layer, []))[1].append((parent, act_name, kind))
        elif parent._modules and not isinstance(parent, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            for layer, act_parent, act_name, kind in _traced_pairs(parent, where):
                plans.setdefault(id(layer), (layer, []))[1].append((act_parent, act_name, kind))

    for layer_id, (layer, targets) in plans.items():
        kinds = {kind for _, _, kind in targets}
        # Every registration of the layer must feed such an activation (else another use of the same
        # object would get activated outputs) and they must agree on which.
        if len(kinds) != 1 or len(targets) != len(where.get(layer_id, ())):
            continue
        layer.activation = kinds.pop()
        for act_parent, act_name, _ in targets:
            setattr(act_parent, act_name, torch.nn.Identity())


class _EveryModuleALeaf(torch.fx.Tracer):
    """Traces one forward only: submodule calls stay call_module nodes, whatever the module."""

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return True


def _traced_pairs(module: torch.nn.Module, where):
    """(layer, act_parent, act_name, kind) for each layer->activation pair ``module.forward`` shows."""
    if "forward" in module.__dict__ or not _straight_line_forward(type(module), frozenset(module._modules)):
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an analysis trace, not a call: the user's warnings are not ours
            graph = _EveryModuleALeaf().trace(module)
    except Exception:  # noqa: BLE001 - any forward fx cannot trace is simply not fused
        return []
    calls = [n for n in graph.nodes if n.op == "call_module"]
    count: dict[str, int] = {}
    for n in calls:
        count[n.target] = count.get(n.target, 0) + 1
    pairs = []
    for node in calls:
        layer = module.get_submodule(node.target)
        users = list(node.users)
        if not _fusible_layer(layer) or count[node.target] != 1 or len(users) != 1:
            continue
        act_node = users[0]
        if act_node.op != "call_module" or act_node.args != (node,) or act_node.kwargs or count[act_node.target] != 1:
            continue
        act = module.get_submodule(act_node.target)
        kind = _activation_kind(act)
        # Registered once each in the whole model: no other module can call either of them.
        if kind is None or len(where.get(id(layer), ())) != 1 or len(where.get(id(act), ())) != 1:
            continue
        act_parent, act_name = where[id(act)][0]
        pairs.append((layer, act_parent, act_name, kind))
    return pairs


_BRANCHES = (ast.If, ast.IfExp, ast.While, ast.Try, ast.BoolOp, ast.Match, ast.comprehension, ast.Lambda,
             ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Yield, ast.YieldFrom, ast.Await,
             ast.Global, ast.Nonlocal)
if hasattr(ast, "TryStar"):
    _BRANCHES += (ast.TryStar,)
_SAFE_BUILTINS = frozenset({"len", "range", "zip", "enumerate", "reversed", "list", "tuple", "int", "float",
                            "min", "max", "sum", "abs", "print"})
_SAFE_MODULES = ("torch", "math", "operator")


@functools.lru_cache(maxsize=None)
def _straight_line_forward(cls: type, submodules: frozenset) -> bool:
    """Whether ``cls.forward`` is code whose every run calls the same modules in the same data flow as
    one fx trace shows: no branches, loops only over submodule containers, calls only to submodules,
    tensor methods and torch. Conservative: anything it cannot read is a no."""
    forward = cls.forward
    if not isinstance(forward, types.FunctionType):
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(forward)))
    except (OSError, TypeError, SyntaxError):
        return False
    fn = tree.body[0]
    if not isinstance(fn, ast.FunctionDef):
        return False
    args = fn.args
    params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if not params:
        return False
    me = params[0]  # "self", whatever it is called
    module_vars: set[str] = set()  # loop variables bound to submodules
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, _BRANCHES):
            return False
        if isinstance(node, ast.For):
            if not isinstance(node.target, (ast.Name, ast.Tuple)) or not _structural(node.iter, me, submodules):
                return False
            module_vars.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    locals_ = set(params) | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    for node in ast.walk(fn):
        if isinstance(node, ast.Subscript) and _self_root(node.value, me) is not None:
            try:  # self.convs[-1] is fixed; self.convs[self.mode] is chosen at run time
                ast.literal_eval(node.slice)
            except ValueError:
                return False
        if isinstance(node, ast.Call) and not _safe_call(node.func, me, submodules, module_vars, locals_,
                                                         forward.__globals__):
            return False
    return True


def _self_root(expr, me: str) -> str | None:
    """For self.a.b[0].c: "a" (the attribute read from self, named ``me``), else None."""
    while isinstance(expr, (ast.Attribute, ast.Subscript)):
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == me:
            return expr.attr
        expr = expr.value
    return None


def _structural(expr, me, submodules) -> bool:
    """self.blocks, self.blocks.values(), zip(self.a, self.b), enumerate(self.a): fixed by the structure."""
    if isinstance(expr, (ast.Attribute, ast.Subscript)):
        return _self_root(expr, me) in submodules
    if isinstance(expr, ast.Call) and not expr.keywords:
        func = expr.func
        if isinstance(func, ast.Name) and func.id in ("zip", "enumerate", "reversed"):
            return bool(expr.args) and all(_structural(a, me, submodules) for a in expr.args)
        if isinstance(func, ast.Attribute) and func.attr in ("values", "children", "items") and not expr.args:
            return _structural(func.value, me, submodules)
    return False


def _safe_call(func, me, submodules, module_vars, locals_, globals_) -> bool:
    root = _self_root(func, me)
    if root is not None:
        return root in submodules  # a submodule call (a leaf in the trace), not a helper method
    if isinstance(func, ast.Name):
        if func.id in locals_:
            return func.id in module_vars
        return func.id in _SAFE_BUILTINS or _from_safe_module(globals_.get(func.id))
    if isinstance(func, ast.Attribute):
        base = func.value
        while isinstance(base, (ast.Attribute, ast.Subscript)):
            base = base.value
        if isinstance(base, ast.Name):
            if base.id in locals_:
                return True  # a method of a local tensor: x.flatten(1), x.relu()
            return _from_safe_module(globals_.get(base.id, getattr(builtins, base.id, None)))
        return isinstance(base, ast.Call)  # a method of a call's result (that call is checked on its own)
    return False


def _from_safe_module(obj) -> bool:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(name, str) and name.split(".")[0] in _SAFE_MODULES
