"""The torch.compile backend: `torch.compile(model, backend="trident")`.

Registered through the `torch_dynamo_backends` entry point (pyproject.toml), so torch finds it
without trident being imported first.

Dynamo hands the backend an fx graph of torch functions (parameters and buffers lifted to
placeholders) and example inputs. The graph is partitioned in one linear sweep
(compiler/fx_partition.py): maximal acyclic groups of nodes the fx frontend converts
(`supported_fx_target`) become trident engines; every other node stays in torch, between them.
Each partition builds its engine lazily, at its first call with a new input signature (shapes,
dtypes, device), and keeps one engine per signature. A partition with symbolic sizes (dynamic=True,
torch._dynamo.mark_dynamic) builds one engine with an optimization profile over them
(compiler/dynamo_shapes.py) that serves every size in range; `engines_built` counts its builds.
Weights are baked into the engines at their first call (as any inference compiler does).

In-place writes are made explicit first (compiler/fx_mutation.py): readers after `out.mul_(g)`
read its result; a write that cannot be (into an input, a weight, or memory a view still reads)
runs the whole graph in torch.

Nothing runs in torch silently: the nodes left in torch, and the partitions whose engine could
not be built, are said once per compiled graph (a warning naming op, node and reason) and
recorded in the graph's CompileReport (`trident explain --torch-compile` prints it).

Options (`torch.compile(model, backend="trident", options={...})`):
  precision    "fp32" (the default everywhere in trident: eager's numerics) | "fp16" | "int8"
  calibration  int8: batches of the model's tensor inputs (tuples, in forward's order), run
               through the graph in torch to calibrate each engine; None calibrates on the
               inputs of each engine's first call (with a warning)
  cuda_graph   True (default): engines replay CUDA graphs on a GPU (unless TRIDENT_CUDA_GRAPHS=0,
               which turns capture off everywhere, as compute-sanitizer needs); outputs are cloned
               before they are handed to torch, so later calls never overwrite them
  fallback     True (default): what trident cannot compile runs in torch, with a warning;
               False raises an UnsupportedError (or the build's TridentError) instead
  min_nodes    1: partitions with fewer compute nodes stay in torch
"""
from __future__ import annotations

import copy
import operator
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.fx
from torch.utils._pytree import tree_flatten, tree_unflatten

from trident.compiler import config as _config  # (also: Triton's interpreter without CUDA)
from trident.compiler import fx_partition
from trident.compiler.autotune.tuner import LEVELS
from trident.compiler.dynamo_shapes import (ALIASES, SymbolicInputs, fits, profiles_for, run_time_numbers,
                                            symbolic_inputs, take_sized_int_values)
from trident.compiler.errors import TridentError, UnsupportedError
from trident.compiler.fx_mutation import (EXPLICIT, RUN_TIME_INPUT, example_value, make_writes_explicit,
                                          return_written_inputs)
from trident.compiler.fx_vmap import lower_vmaps

DEFAULTS = {"precision": _config.DEFAULT_PRECISION, "calibration": None, "cuda_graph": True,
            "fallback": True, "min_nodes": 1, "tune": "none"}
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class InTorch:
    """Something of the compiled graph that runs in torch, and why."""
    op: str
    node: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} (node {self.node}): {self.reason}"


@dataclass
class CompileReport:
    """What the backend did with one graph (kept as the returned module's `trident_report`)."""
    nodes: int = 0
    partition_s: float = 0.0
    in_torch: list[InTorch] = field(default_factory=list)
    subgraphs: list["TridentSubgraph"] = field(default_factory=list)

    def engines(self) -> list:
        return [e for s in self.subgraphs for e in s.built_engines()]

    @property
    def num_kernels(self) -> int:
        return sum(e.num_kernels for e in self.engines())

    @property
    def torch_steps(self) -> int:
        """Ops inside built engines that run through torch (no kernel for them)."""
        return sum(s.kind == "torch" for e in self.engines() for s in e.plan.steps)

    def import_s(self) -> float:
        return sum(s.import_s for s in self.subgraphs)

    def compile_s(self) -> float:
        return sum(s.compile_s for s in self.subgraphs)

    def render(self) -> str:
        lines = [f"torch.compile graph: {self.nodes} nodes, {len(self.subgraphs)} trident "
                 f"partition(s) (partitioned in {self.partition_s * 1e3:.1f} ms), "
                 f"{self.num_kernels} kernel launches, {self.torch_steps} op(s) in torch inside "
                 f"engines"]
        lines.append(f"left in torch: {len(self.in_torch)}")
        lines += [f"  - {t}" for t in self.in_torch]
        lines += [f"  - inside an engine: {s.node.op} (node {s.node.name}): {s.reason or 'no kernel takes it'}"
                  for e in self.engines() for s in e.plan.steps if s.kind == "torch"]
        return "\n".join(lines)


def trident_backend(gm: torch.fx.GraphModule, example_inputs: Sequence, **kwargs):
    """A torch.compile backend: returns a callable that runs `gm` with trident engines."""
    options = _options(kwargs.get("options"))
    _config.notice_interpreter()
    report = CompileReport(nodes=len(gm.graph.nodes))
    start = time.perf_counter()
    lower_vmaps(gm)  # transformers 4.x's vmap-built masks become broadcasts (compiler/fx_vmap.py)
    written: list[int] = []  # the inputs the graph writes into, their new values its last outputs
    split, in_torch = _whole_graph_in_torch(gm, written) or partition(gm)
    report.partition_s = time.perf_counter() - start
    report.in_torch += in_torch
    if in_torch and not options["fallback"]:
        raise UnsupportedError("trident backend (fallback=False): " + "; ".join(map(str, in_torch)))
    if split is None:
        _say_in_torch(report)
        return _writing_back(gm, written, report)
    _wrap_partitions(split, _weight_placeholders(gm, example_inputs), options, report)
    if options["precision"] == "int8" and options["calibration"] is not None:
        _calibrate(split, gm, example_inputs, options["calibration"], report.subgraphs, written)
    _say_in_torch(report)
    return _writing_back(split, written, report)


class _WritesBack(torch.nn.Module):
    """Runs a graph whose last outputs are the new values of inputs it writes into
    (fx_mutation.return_written_inputs), copies them into those inputs, and returns the rest."""

    def __init__(self, module: torch.nn.Module, written: list[int]):
        super().__init__()
        self.module, self.written = module, written

    def forward(self, *args):
        outs = self.module(*args)
        kept = len(outs) - len(self.written)
        with torch.no_grad():
            for position, value in zip(self.written, outs[kept:]):
                if value is not args[position]:
                    args[position].copy_(value)
        return outs[:kept]


def _writing_back(module: torch.nn.Module, written: list[int], report: CompileReport) -> torch.nn.Module:
    if written:
        module = _WritesBack(module, written)
    module.trident_report = report
    return module


def recording_backend(options: dict | None = None):
    """(backend, reports): a torch.compile backend running trident_backend with `options`, and the
    list it appends each compiled graph's CompileReport to (what the zoo, explain and tests read)."""
    reports: list[CompileReport] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: Sequence):
        out = trident_backend(gm, example_inputs, options=options)
        reports.append(out.trident_report)
        return out
    return backend, reports


def _options(given) -> dict:
    options = dict(DEFAULTS)
    options.update(given or {})
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TridentError(f"trident backend: unknown option(s) {sorted(unknown)}; known: "
                           f"{sorted(DEFAULTS)}")
    if options["precision"] not in PRECISIONS:
        raise TridentError(f"trident backend: precision must be one of {PRECISIONS}, got "
                           f"{options['precision']!r}")
    if options["tune"] not in LEVELS:
        raise TridentError(f"trident backend: tune must be one of {LEVELS}, got {options['tune']!r}")
    if options["calibration"] is not None and options["precision"] != "int8":
        raise TridentError("trident backend: calibration is an int8 option (precision='int8')")
    return options


def _say_in_torch(report: CompileReport) -> None:
    if report.in_torch:
        warnings.warn(f"trident backend: {len(report.in_torch)} node(s) run in torch: "
                      + "; ".join(map(str, report.in_torch)), stacklevel=3)


def _wrap_partitions(split: torch.fx.GraphModule, weights: set[str], options: dict,
                     report: CompileReport, prefix: str = "") -> None:
    """Each fused_<k> submodule of `split` with at least min_nodes compute nodes becomes a
    TridentSubgraph; weights: the names of split's placeholders that are model weights."""
    for node in split.graph.nodes:
        if node.op != "call_module" or not node.target.startswith("fused_"):
            continue
        sub = split.get_submodule(node.target)
        sub.meta[EXPLICIT] = True  # its writes into its inputs are the parent graph's, made explicit
        if _compute_nodes(sub) < options["min_nodes"]:
            continue
        weight_args = [_is_weight_arg(a, weights) for a in node.args]
        wrapped = TridentSubgraph(sub, weight_args, options, report, prefix + node.target)
        report.subgraphs.append(wrapped)
        setattr(split, node.target, wrapped)
    split.recompile()


def _whole_graph_in_torch(gm: torch.fx.GraphModule, written: list[int]) -> tuple[None, list[InTorch]] | None:
    """(None, why) when an in-place write of the graph cannot be made explicit (fx_mutation):
    no partition may then leave torch. None when every write was (or there is none); writes
    into inputs are then returned as the graph's last outputs, their positions in `written`."""
    from trident.compiler.frontend.fx import target_label

    inputs_written: list = []
    unexplicit = make_writes_explicit(gm, inputs_written)
    if not unexplicit and inputs_written:
        positions = return_written_inputs(gm, inputs_written)
        if positions is None:
            unexplicit = [(final, f'writes in place into "{state.name}", a graph input, in a graph whose '
                           "outputs are no tuple") for state, final in inputs_written]
        else:
            written += positions
    if not unexplicit:
        return None
    return None, [InTorch(target_label(node), node.name, f"{why}: the whole graph runs in torch")
                  for node, why in unexplicit]


def partition(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule | None, list[InTorch]]:
    """`gm` with every maximal supported subgraph fused into a `fused_<k>` submodule (None if
    nothing is supported), and the compute nodes left in torch with the reason."""
    from trident.compiler.frontend.fx import supported_fx_target, target_label

    parts = fx_partition.propose(gm.graph, _support(supported_fx_target))
    in_torch = [InTorch(target_label(n), n.name, _why_in_torch(n, supported_fx_target))
                for n in parts.left_in_torch if n.target is not operator.getitem]
    if not parts.partitions:
        return None, in_torch
    _recompute_numbers(gm.graph, parts.partitions)
    return fx_partition.fuse(gm, parts.partitions), in_torch


def _recompute_numbers(graph: torch.fx.Graph, partitions: list[list[torch.fx.Node]]) -> None:
    """A Python number (a size's arithmetic: `x.shape[1] + 1`) one partition computes and a later
    one reads would be an output of the first, which a partition cannot return (its engine
    returns tensors). The reader's partition computes it again instead, from the same inputs
    (and the numbers among them, likewise): integer arithmetic, no tensor work. The copies go
    ahead of the partition's first node, in the order they are made (arguments first)."""
    home = {node: k for k, nodes in enumerate(partitions) for node in nodes}
    order = {node: i for i, node in enumerate(graph.nodes)}
    anchors = [nodes[0] for nodes in partitions]  # (each partition's nodes are in graph order)
    copies: list[dict] = [{} for _ in partitions]

    def copy_into(k: int, number: torch.fx.Node) -> torch.fx.Node:
        made = copies[k]
        if number not in made:
            for a in number.all_input_nodes:
                if home.get(a) == home[number] and _is_number(a):
                    copy_into(k, a)
            with graph.inserting_before(anchors[k]):
                copy = graph.node_copy(number, lambda a: made.get(a, a))
            copy.meta = dict(number.meta)
            made[number] = copy
            order[copy] = order[anchors[k]] - 1 + len(made) / 1024
            partitions[k].append(copy)
        return made[number]

    for node in list(graph.nodes):
        if node not in home or not _is_number(node):
            continue
        for user in list(node.users):
            k = home.get(user)
            if k is not None and k != home[node]:
                user.replace_input_with(node, copy_into(k, node))
    for nodes in partitions:
        nodes.sort(key=order.get)


def _is_number(node: torch.fx.Node) -> bool:
    value = example_value(node)
    return isinstance(value, (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool))


def _why_in_torch(node: torch.fx.Node, supported_target) -> str:
    if _in_vmap(node):
        return "part of a torch.vmap, which runs in torch whole"
    from trident.compiler.frontend.fx.complex import touches_complex, why_complex_in_torch

    if touches_complex(node):
        return why_complex_in_torch(node)
    if supported_target(node):
        return "a value torch reads that is no tensor (partitions return tensors)"
    return "no trident converter for this op"


def _support(supported_target, refused: torch.fx.Node | None = None):
    """The partitioner's predicate: a supported target, except
    - an item taken from the result of a node left in torch (a partition would receive that
      whole tuple, and import would take it for a constant): it stays in torch with its producer;
    - a node whose value is no tensor (shape arithmetic: an int, a size) that torch or the graph's
      output reads: a partition returns tensors only, so it stays in torch with its reader
      (transformers 4.x's Funnel computes its relative-position bounds so);
    - `refused`: a node a converter refused (a partition split around it);
    - a node that reads or makes a complex tensor outside a region the frontend carries as pairs
      of real tensors (frontend/fx/complex.py: rotary embeddings through view_as_complex, Fourier
      transforms): trident has no complex dtype, so it stays in torch, and the partitions around
      it get real tensors."""
    from trident.compiler.frontend.fx.complex import complex_region, touches_complex

    known: dict[torch.fx.Node, bool] = {}
    regions: dict[torch.fx.Graph, set] = {}

    def converts(node: torch.fx.Node) -> bool:
        if not touches_complex(node):
            return supported_target(node)
        if node.graph not in regions:
            regions[node.graph] = complex_region(node.graph, supported_target, excluded={refused})
        return node in regions[node.graph]

    def supported(node: torch.fx.Node) -> bool:
        if node not in known:
            known[node] = True  # (provisional: a getitem's source may ask about its users)
            source = node.args[0] if node.args else None
            from_torch = (node.target is operator.getitem and isinstance(source, torch.fx.Node)
                          and source.op in fx_partition.COMPUTE_OPS and not supported(source))
            known[node] = node is not refused and converts(node) and not from_torch and not _in_vmap(node) \
                and not _read_outside(node, supported)
        return known[node]
    return supported


def _in_vmap(node: torch.fx.Node) -> bool:
    """Is `node` part of a torch.vmap (transformers 4.x builds its attention masks so): one of
    functorch's calls that enter and leave it, or a value computed inside (a batched tensor,
    which only the vmap around it can unwrap)? The region stays in torch, whole."""
    if str(getattr(node.target, "__module__", "") or "").startswith("torch._functorch"):
        return True
    value = example_value(node)
    return isinstance(value, torch.Tensor) and torch._C._functorch.is_batchedtensor(value)


def _read_outside(node: torch.fx.Node, supported) -> bool:
    """Is `node` a value no partition could return (not a tensor, nor a tuple of them) that a
    node outside every partition reads?"""
    value = example_value(node)
    if value is None or isinstance(value, torch.Tensor) or \
            (isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in value)):
        return False
    return any(u.op not in fx_partition.COMPUTE_OPS or not supported(u) for u in node.users)


def _compute_nodes(gm: torch.fx.GraphModule) -> int:
    return sum(n.op in fx_partition.COMPUTE_OPS
               and str(getattr(n.target, "__name__", n.target)) != "getitem"
               for n in gm.graph.nodes)


def _weight_placeholders(gm: torch.fx.GraphModule, example_inputs: Sequence) -> set[str]:
    """Names of `gm`'s placeholders that are model weights (lifted parameters and buffers)."""
    from trident.compiler.frontend.fx import user_input_indices

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    users = set(user_input_indices(gm, example_inputs))
    return {n.name for i, (n, x) in enumerate(zip(placeholders, example_inputs))
            if isinstance(x, torch.Tensor) and i not in users}


def _is_weight_arg(arg, weights: set[str]) -> bool:
    """A partition argument that is part of the model: a lifted weight, or a tensor attribute
    of the graph (a constant dynamo captured)."""
    if not isinstance(arg, torch.fx.Node):
        return False
    return (arg.op == "placeholder" and arg.name in weights) or arg.op == "get_attr"


def _calibrate(split, gm, example_inputs: Sequence, calibration, subgraphs, written: Sequence[int] = ()) -> None:
    """Run each calibration batch through the split graph in torch and give every partition
    the inputs it saw. An input the graph writes into (a cache) is no part of a batch: each batch
    runs on a copy of its first value, so calibrating changes no state of the caller's."""
    from trident.compiler.frontend.fx import user_input_indices

    users = [i for i in user_input_indices(gm, example_inputs) if i not in written]
    wanted = {s.name: s for s in subgraphs}
    symbolic = symbolic_inputs(gm)
    for b, batch in enumerate(calibration):
        batch = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
        if len(batch) != len(users):
            raise TridentError(f"trident backend: calibration batch {b} has {len(batch)} "
                               f"tensor(s); the compiled graph takes {len(users)} input(s)")
        args = [a.clone() if i in written else a for i, a in enumerate(example_inputs)]
        for i, x in zip(users, batch):
            args[i] = x
        _Recorder(split, wanted).run(*_batch_sizes(symbolic, args))


def _batch_sizes(sym: SymbolicInputs | None, args: list) -> list:
    """The arguments with each int placeholder that is a symbol at the size the batch's tensors
    give it: the example's is dynamo's SymInt, and computing with it would specialize the graph
    to the example's size (dynamo then refuses a dim marked dynamic)."""
    if sym is None:
        return args
    sizes = {s: int(args[i].shape[d]) for i, dims in sym.dims.items() for d, s in dims.items()}
    return [sizes.get(sym.scalars.get(i), a) for i, a in enumerate(args)]


class _Recorder(torch.fx.Interpreter):
    """Runs a split graph in torch (the partitions' own fx code), recording partition inputs."""

    def __init__(self, split, wanted: dict):
        super().__init__(split)
        self.wanted = wanted

    def call_module(self, target, args, kwargs):
        sub = self.wanted.get(target)
        if sub is None:
            return super().call_module(target, args, kwargs)
        args = sub._with_int_values(args)  # (the partition's graph takes those too)
        sub.calibration.append(tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                     for a in args))
        with torch.no_grad():
            return sub.gm(*args)


def _signature(args: Sequence) -> tuple:
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append((tuple(a.shape), a.dtype, a.device))
        elif isinstance(a, (int, float, bool)):
            key.append(("value", a))
        else:
            key.append(("other", type(a).__name__))
    return tuple(key)


_FALLBACK = object()
_AS_VALUES = object()  # a build that took the run-time ints as tensors failed: take them as values


def _detached(args: Sequence) -> tuple:
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


def _check_tensor_arguments(args: Sequence) -> None:
    """Tensors reach an engine as tensors: one inside a list or tuple would be imported as a
    constant of the first call."""
    for k, a in enumerate(args):
        if not isinstance(a, torch.Tensor) and any(
                isinstance(x, torch.Tensor) for x in tree_flatten(a)[0]):
            raise UnsupportedError(f"partition argument {k} is a {type(a).__name__} of tensors")


def _cpu_scalar(a) -> bool:
    """A 0-d CPU tensor: torch lets it meet tensors on any device, as a number."""
    return isinstance(a, torch.Tensor) and a.dim() == 0 and a.device.type == "cpu"


def _call_device(args: Sequence) -> torch.device | None:
    """The one device the call's tensors are on, as torch decides it (0-d CPU tensors beside
    tensors on a GPU do not count: a generation cache's counters are such); None if several."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    devices = {a.device for a in tensors if not _cpu_scalar(a)} or {a.device for a in tensors}
    return next(iter(devices)) if len(devices) == 1 else None


def _on_device(a, device: torch.device):
    """An engine's input: a 0-d CPU tensor moves to the engine's device (the others are there)."""
    if not isinstance(a, torch.Tensor):
        return a
    return a.detach().to(device) if _cpu_scalar(a) and device.type != "cpu" else a.detach()


def _number_tensor(value: int | float, args: Sequence) -> torch.Tensor:
    """An int as a 0-d int64 tensor, a float as a 0-d float32 one (what torch computes a float32
    tensor's arithmetic with it in), on the device of the call's first tensor that is not a 0-d
    CPU one (on every call: the first found, not a scan of every argument)."""
    dtype = torch.float32 if isinstance(value, float) else torch.int64
    device = next((a.device for a in args if isinstance(a, torch.Tensor) and not _cpu_scalar(a)), "cpu")
    return torch.tensor(value, dtype=dtype, device=device)


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _int_scalar(a) -> bool:
    """A 0-d integer tensor (a size a frame broken off before computed, say)."""
    return isinstance(a, torch.Tensor) and a.dim() == 0 and a.dtype in _INTEGER_DTYPES


def _passed_float(a) -> bool:
    """A Python float dynamo hands over as a 0-d CPU tensor (not a parameter or buffer)."""
    return _cpu_scalar(a) and not isinstance(a, torch.nn.Parameter)


class TridentSubgraph(torch.nn.Module):
    """Runs one supported partition: a trident engine per input signature (built lazily)."""

    def __init__(self, gm: torch.fx.GraphModule, weight_args: list[bool], options: dict,
                 report: CompileReport | None = None, name: str = "fused"):
        super().__init__()
        self.gm = gm
        # sized ints the graph also computes with: passed again as 0-d tensors after the arguments
        self._int_values = take_sized_int_values(gm)
        weight_args = list(weight_args) + [False] * len(self._int_values)
        self.weight_args = weight_args
        # The parent graph knows which arguments are weights; the partition's own placeholders
        # can look like one (a 0-d tensor another partition computed looks like a float dynamo
        # passes as a tensor): the others are marked as inputs, never baked in.
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for node, weight in zip(placeholders, weight_args):
            if not weight:
                node.meta[RUN_TIME_INPUT] = True
        # the arguments other than the lifted parameters and buffers (the engine's key)
        self._user_positions = [k for k, weight in enumerate(weight_args) if not weight]
        self._weight_positions: list[int] | None = None  # by identity; set at the first call
        self._value_positions: list[int] = []             # by value (floats passed as 0-d tensors)
        self._sizes_by_value: list[int] = []              # 0-d int inputs read as sizes (_take_sizes_by_value)
        self._weights_held: list[list] = []  # each engine's keyed weights, kept alive (their ids too)
        self.options = options
        self.report = report
        self.name = name
        self.calibration: list[tuple] = []    # int8: this partition's inputs per batch
        self.engines: dict[tuple, Any] = {}
        self.symbolic = symbolic_inputs(gm)   # dynamic sizes: one engine serves them all
        self._run_time_numbers = run_time_numbers(gm)  # symbolic numbers passed as tensors, not baked in
        self.engines_built = 0
        self._said_fallback = False           # a failing build is reported once, not per shape
        self._said_per_size = False           # so is a profile that does not build
        self._split: torch.fx.GraphModule | None = None  # partitioned again around a refused node
        self.import_s = self.compile_s = 0.0  # build time, summed over the engines built
        output = next(n for n in gm.graph.nodes if n.op == "output")
        leaves, self._out_spec = tree_flatten(output.args[0])
        self._num_outputs = len(leaves)

    def built_engines(self) -> list:
        entries = [e for v in self.engines.values() for e in (v if isinstance(v, list) else [v])]
        return [e[0] for e in entries if e is not _FALLBACK]

    def forward(self, *given):
        args = self._with_int_values(given)
        if self._split is not None:  # (its parts key their engines by these weights' identities)
            return self._split(*args)
        call = self._with_number_tensors(args)
        weights = self._weights_key(call)
        entry = self._dynamic_entry(call, weights) if self.symbolic else None
        if entry is None:
            # Keyed by the signature of the arguments that are not weights (dynamo's guards
            # cover the weights' shapes; hashing the hundreds of lifted parameters of a CNN cost
            # more per call than its engine at batch 8) and by which weights these are.
            key = (_signature([call[k] for k in self._user_positions]), weights)
            entry = self.engines.get(key)
            if entry is None:
                entry = self.engines[key] = self._build(call)
        if entry is _AS_VALUES:  # a number is a size somewhere: the numbers are values, an engine per value
            self.engines = {k: e for k, e in self.engines.items() if e is not _AS_VALUES}
            self._run_time_numbers = []
            return self.forward(*given)
        if entry is _FALLBACK:
            return self.gm(*_detached(args)) if self._split is None else self._split(*args)
        engine, keep = entry
        # An inference engine computes no gradients (and Triton's interpreter reads raw data).
        outs = engine(*[_on_device(call[i], engine.device) for i in keep])
        if engine.cuda_graph and engine.device.type == "cuda":
            outs = [o.clone() for o in outs]  # the engine's buffers: the next replay rewrites them
        return tree_unflatten(list(outs), self._out_spec)

    def _with_int_values(self, args: Sequence) -> tuple:
        """The arguments, then each sized int the graph computes with as a 0-d int64 tensor
        (dynamo_shapes.take_sized_int_values)."""
        if not self._int_values:
            return tuple(args)
        return (*args, *(_number_tensor(args[k], args) for k in self._int_values))

    def _with_number_tensors(self, args: Sequence) -> tuple:
        """The arguments with the run-time numbers as 0-d tensors beside the others."""
        if not self._run_time_numbers:
            return tuple(args)
        return tuple(_number_tensor(a, args) if k in self._run_time_numbers else a for k, a in enumerate(args))

    def _weights_key(self, args: Sequence) -> tuple:
        """Which weights this call passes. The engine bakes its first call's weights in as
        constants, and dynamo runs one compiled frame for every instance of a module (each layer
        of a model whose layer's forward breaks the graph), passing that layer's own parameters:
        each set of weights gets its own engine. Identities (held by _build, so that none is
        reused); but the Python floats dynamo passes as new 0-d CPU tensors at every call (under
        dynamic shapes: eps, a scale) by value."""
        if self._weight_positions is None:
            weights = [k for k, weight in enumerate(self.weight_args) if weight]
            self._value_positions = [k for k in weights if _passed_float(args[k]) or k in self._sizes_by_value]
            self._weight_positions = [k for k in weights if k not in self._value_positions]
        return (tuple([id(args[k]) for k in self._weight_positions]),
                tuple([args[k].item() for k in self._value_positions]))

    def _dynamic_entry(self, args: Sequence, weights: tuple):
        """The engine with a profile over the symbolic sizes that fits `args` (built if none
        does); None to fall back to one engine per concrete signature."""
        entries = self.engines.setdefault((self.symbolic.key(args), weights), [])
        sizes = self.symbolic.symbols_of(args)
        for entry in entries:
            if entry is _FALLBACK or fits(entry[0], sizes):
                return entry
        entry = self._build(args, profiles_for(self.symbolic, args))
        if entry is _AS_VALUES:
            return entry
        if entry is _FALLBACK:
            if not entries:
                self.symbolic = None  # no profile: engines per concrete size, as for static graphs
            return None               # (these sizes: an engine of their own)
        entries.append(entry)
        return entry

    def _inputs_on(self, device: torch.device | None, args: tuple) -> tuple:
        """The call's arguments with its 0-d CPU inputs (not weights) on `device`: the engine
        takes every input on its own device."""
        if device is None:
            return args
        weight = self.weight_args + [False] * len(args)
        return tuple(a if weight[k] else _on_device(a, device) for k, a in enumerate(args))

    def _examples(self, args: Sequence) -> list:
        def example(a, is_weight: bool):
            if is_weight and isinstance(a, torch.Tensor) and not isinstance(a, torch.nn.Parameter):
                return torch.nn.Parameter(a, requires_grad=False)  # marks it a weight for import_fx
            return a
        return [example(a, w) for a, w in zip(args, self.weight_args + [False] * len(args))]

    def _calibration_for(self, args: Sequence, keep: list[int]) -> list[tuple]:
        batches = self.calibration
        if not batches:
            warnings.warn(f"trident backend: int8 partition {self.name} calibrates on its first "
                          "call's inputs (pass options={'calibration': batches} for real "
                          "thresholds)", stacklevel=4)
            batches = [tuple(args)]
        return [tuple(b[i] for i in keep) for b in batches]

    def _build(self, args: Sequence, profiles: Sequence[dict] = ()):
        """(engine, indices of the arguments it takes), or _FALLBACK. profiles: build options
        of optimization profiles to try in order (none: an engine for these shapes)."""
        from trident.compiler.frontend.fx import user_input_indices
        from trident.compiler.quantize.plan import QuantOptions
        from trident.compiler.build import resolve_device

        self._weights_held.append([args[k] for k in self._weight_positions])
        device = _call_device(args)
        args = self._inputs_on(device, _detached(args))
        examples = self._examples(args)
        precision = self.options["precision"]
        try:
            _check_tensor_arguments(args)
            resolve_device(device)  # a device trident cannot run on: say so before compiling
            keep = user_input_indices(self.gm, examples)
            quantization = None
            if precision == "int8":
                quantization = QuantOptions.from_kwargs(self._calibration_for(args, keep))
            with torch.inference_mode(False), torch.no_grad():
                engine = (self._profiled(examples, quantization, device, profiles) if profiles
                          else self._engine(examples, quantization, device))
            self.engines_built += 1
            if len(engine.outputs) != self._num_outputs:
                raise TridentError(f"the engine has {len(engine.outputs)} outputs, the "
                                   f"partition {self._num_outputs}")
            engine.cuda_graph = bool(self.options["cuda_graph"]) and _config.CUDA_GRAPHS
        except TridentError as e:
            if self._run_time_numbers or self._take_sizes_by_value(args):  # (forward asks again)
                return _AS_VALUES
            if profiles:  # no shape-generic engine: one per size instead (nothing runs in torch)
                self._say_per_size(e)
                return _FALLBACK
            if not self.options["fallback"]:
                raise
            if not self._split_around(e):
                self._record_fallback(e)
            return _FALLBACK
        return engine, keep

    def _take_sizes_by_value(self, args: Sequence) -> bool:
        """A 0-d integer tensor the graph reads where a size goes has no run-time form in an
        engine: F.pad's widths that a frame broken off before it computed from a module's buffers
        (EnCodec's and Mimi's padded convolutions) arrive as tensors, and the padded tensor's
        shape depends on their values. After a failed build such inputs are taken as constants,
        each engine keyed by their values (as floats passed as 0-d tensors are). False where
        there are none, or they were taken so already."""
        passed = len(self.weight_args) - len(self._int_values)  # (not the sized ints appended)
        ints = [k for k in self._user_positions if k < passed and _int_scalar(args[k])]
        if not ints:
            return False
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for k in ints:
            self.weight_args[k] = True
            placeholders[k].meta.pop(RUN_TIME_INPUT, None)
        self._sizes_by_value += ints
        self._user_positions = [k for k in self._user_positions if k not in ints]
        self._weight_positions = None  # (_weights_key sorts them again, these by value)
        return True

    def _split_around(self, error: TridentError) -> bool:
        """A converter refused one node of this partition (error.fx_node; an adaptive pool with
        windows of unequal size, say): that node runs in torch and the rest is partitioned
        again, each part a TridentSubgraph of its own (which splits again at its own refusals),
        so one refusal does not send the whole partition to torch. False where the error names
        no node of it, or for int8 (its calibration batches were recorded per partition)."""
        from trident.compiler.frontend.fx import supported_fx_target, target_label

        name = getattr(error, "fx_node", None)
        if self.options["precision"] == "int8" or self._split is not None:
            return False
        gm = torch.fx.GraphModule(self.gm, copy.deepcopy(self.gm.graph))  # fusing rewrites a graph
        refused = next((n for n in gm.graph.nodes
                        if n.name == name and n.op in fx_partition.COMPUTE_OPS), None)
        if refused is None:
            return False
        supported = _support(supported_fx_target, refused)
        parts = fx_partition.propose(gm.graph, supported)
        if parts.partitions:
            gm = fx_partition.fuse(gm, parts.partitions)
        placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
        weights = {p for p, weight in zip(placeholders, self.weight_args) if weight}
        _wrap_partitions(gm, weights, self.options, self.report or CompileReport(), f"{self.name}.")
        self._split = gm
        item = InTorch(target_label(refused), refused.name, " ".join(str(error).split()))
        # (nodes that leave with it: a complex value it reads is made in torch too)
        also = [InTorch(target_label(n), n.name, _why_in_torch(n, supported_fx_target))
                for n in parts.left_in_torch if n is not refused and n.target is not operator.getitem]
        if self.report is not None:
            self.report.in_torch += [item] + also
        warnings.warn(f"trident backend: partition {self.name} runs around a node in torch: {item}"
                      + "".join(f"; {a}" for a in also), stacklevel=4)
        return True

    def _engine(self, examples: list, quantization, device, profile: dict | None = None):
        from trident.compiler.build import build_engine, compile_graph, engine_from, import_model

        precision = self.options["precision"]
        start = time.perf_counter()
        if profile:   # symbolic sizes: import, compile and probe inside build_engine
            profile = dict(profile)
            aliases = profile.pop(ALIASES, {})
            engine = build_engine(self.gm, precision, example_inputs=examples, device=device,
                                  calibration=quantization and quantization.calibration,
                                  tune=self.options["tune"], **profile)
            engine.symbol_aliases = aliases  # (what fits() reads)
            imported = start
        else:
            graph = import_model(self.gm, examples)
            imported = time.perf_counter()
            engine = engine_from(compile_graph(graph, precision, None, True, quantization,
                                               tune=self.options["tune"], device=device), device)
        self.import_s += imported - start
        self.compile_s += time.perf_counter() - imported
        return engine

    def _profiled(self, examples: list, quantization, device, profiles: Sequence[dict]):
        """The engine of the first profile that builds (the last one's error otherwise)."""
        for k, profile in enumerate(profiles):
            try:
                return self._engine(examples, quantization, device, profile)
            except TridentError:
                if k == len(profiles) - 1:
                    raise

    def _say_per_size(self, error: TridentError) -> None:
        if not self._said_per_size:
            self._said_per_size = True
            warnings.warn(f"trident backend: partition {self.name} gets an engine per size, not one "
                          f"for every size: {' '.join(str(error).split())}", stacklevel=5)

    def _record_fallback(self, error: TridentError) -> None:
        if self._said_fallback:
            return
        self._said_fallback = True
        nodes = [n for n in self.gm.graph.nodes if n.op in fx_partition.COMPUTE_OPS]
        where = f"{nodes[0].name} .. {nodes[-1].name}" if nodes else self.name
        item = InTorch(f"partition {self.name} ({len(nodes)} nodes)", where,
                       " ".join(str(error).split()))
        if self.report is not None:
            self.report.in_torch.append(item)
        warnings.warn(f"trident backend: a partition runs in torch: {item}", stacklevel=4)


__all__ = ["trident_backend", "partition", "TridentSubgraph", "CompileReport", "InTorch"]
