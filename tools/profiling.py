"""Per-kernel profile of an engine: time of each step, achieved TFLOP/s and GB/s, and how close
each kernel comes to the roofline of the GPU it runs on.

    report = profile_engine(engine, inputs)      # also: `trident profile MODEL`, `trident run --profile`
    print(report)                                 # table, slowest first
    report.plot_roofline("roofline.png")          # needs matplotlib

On a GPU each step is timed alone: its launch is captured `repeat` times into a CUDA graph and
the replay is timed with CUDA events (no Python launch cost in the figure, as in the engine's own
CUDA-graph replay); the engine's whole call is timed too (its replay, the inputs copied in): what
it takes beyond the sum of the steps is the gaps between launches and cache effects. FLOPs and
bytes come from each kernel's problem (the PROBLEM its source declares) and the layouts of the
tensors it reads and writes; the roofline peaks are measured (a large device copy, an fp16
8192^3 torch.matmul) unless given. Without a GPU, steps are timed by wall clock in
Triton's interpreter: those times show where the interpreter spends its time, not GPU speed, and
no roofline is drawn unless peaks are given.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from trident.compiler import timing
from trident.compiler.autotune import problem_of
from trident.kernels.attention import attention_flops
from trident.tools.common import pyplot

WHOLE_CALLS = {
    "engine": "the engines' calls back to back, inputs copied in: their CUDA-graph replays where they capture one",
    "model": "the torch.compile'd model, each call between CUDA events, as bench perf times it"}
CPU_CAVEAT = ("no GPU: times are wall clock of Triton's interpreter on the CPU (Python executing "
              "each kernel), not GPU performance; rates and roofline figures are not meaningful")


@dataclass(frozen=True)
class Peaks:
    tflops: float   # matmul peak, TFLOP/s
    gbps: float     # memory bandwidth, GB/s (read + write)
    source: str = "given"


@dataclass
class StepProfile:
    index: int          # position in the engine's steps
    name: str           # kernel name (or the op for a torch step)
    kind: str           # "kernel" | "torch"
    template: str       # pointwise, reduction, scan, matmul, conv, depthwise, pool, torch
    time_ms: float
    flops: float
    bytes: float
    roof_pct: float | None = None   # achieved / attainable at this arithmetic intensity, in %

    @property
    def tflops(self) -> float:
        return self.flops / (self.time_ms * 1e-3) / 1e12 if self.time_ms > 0 else 0.0

    @property
    def gbps(self) -> float:
        return self.bytes / (self.time_ms * 1e-3) / 1e9 if self.time_ms > 0 else 0.0

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0


@dataclass
class ProfileReport:
    device: str
    steps: list[StepProfile]        # slowest first
    peaks: Peaks | None
    repeat: int
    caveat: str = ""
    notes: list[str] = field(default_factory=list)
    # ms of the whole calls beside the steps timed alone (GPU only), keyed as WHOLE_CALLS
    whole_ms: dict[str, float] = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        return sum(s.time_ms for s in self.steps)

    def table(self) -> str:
        head = (f"{'#':>3} {'kernel':40s} {'template':10s} {'time us':>9s} {'%':>5s} "
                f"{'MFLOP':>9s} {'MB':>9s} {'TFLOP/s':>8s} {'GB/s':>8s} {'FLOP/B':>7s} {'%roof':>6s}")
        lines = [head, "-" * len(head)]
        total = self.total_ms or 1.0
        for s in self.steps:
            roof = f"{s.roof_pct:6.1f}" if s.roof_pct is not None else f"{'-':>6s}"
            lines.append(f"{s.index:3d} {s.name[:40]:40s} {s.template[:10]:10s} "
                         f"{s.time_ms * 1e3:9.1f} {100 * s.time_ms / total:5.1f} "
                         f"{s.flops / 1e6:9.4g} {s.bytes / 1e6:9.4g} {s.tflops:8.3g} "
                         f"{s.gbps:8.4g} {s.intensity:7.3g} {roof}")
        return "\n".join(lines)

    def __str__(self) -> str:
        out = [f"profile on {self.device}: {len(self.steps)} launches, "
               f"{self.total_ms:.3f} ms in total (sum of steps timed alone, {self.repeat} runs each)"]
        if self.peaks:
            out.append(f"roofline peaks: {self.peaks.tflops:.0f} TFLOP/s, {self.peaks.gbps:.0f} GB/s "
                       f"({self.peaks.source})")
        if self.caveat:
            out.append(f"caveat: {self.caveat}")
        out += [f"whole call: {self.whole_ms[k]:.3f} ms ({WHOLE_CALLS[k]})" for k in self.whole_ms]
        out += [f"note: {n}" for n in self.notes]
        out.append(self.table())
        return "\n".join(out)

    def to_json(self) -> dict:
        return {"device": self.device, "total_ms": self.total_ms, "repeat": self.repeat,
                "whole_ms": self.whole_ms, "caveat": self.caveat,
                "peaks": asdict(self.peaks) if self.peaks else None,
                "steps": [dict(asdict(s), tflops=s.tflops, gbps=s.gbps) for s in self.steps]}

    def plot_roofline(self, path, label_top: int = 8) -> None:
        """A log-log roofline PNG: each kernel at (FLOP/byte, achieved TFLOP/s), sized by time."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
        pts = [s for s in self.steps if s.flops > 0 and s.bytes > 0 and s.time_ms > 0]
        if pts:
            xs = [s.intensity for s in pts]
            total = self.total_ms or 1.0
            for template in sorted({s.template for s in pts}):
                mine = [s for s in pts if s.template == template]
                ax.scatter([s.intensity for s in mine], [s.tflops for s in mine],
                           s=[20 + 600 * s.time_ms / total for s in mine], alpha=0.7,
                           edgecolors="black", linewidths=0.5, label=template)
            for s in sorted(pts, key=lambda s: -s.time_ms)[:label_top]:
                ax.annotate(f"{s.index}: {s.name[:28]}", (s.intensity, s.tflops), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
            lo, hi = min(xs + [0.1]) / 2, max(xs + [1000.0]) * 2
        else:
            lo, hi = 0.1, 1000.0
        if self.peaks:
            ridge = self.peaks.tflops * 1e3 / self.peaks.gbps
            grid = [lo * (hi / lo) ** (k / 200) for k in range(201)]
            ax.plot(grid, [min(self.peaks.tflops, x * self.peaks.gbps / 1e3) for x in grid],
                    color="black", lw=1.5, label=f"roof: {self.peaks.tflops:.0f} TFLOP/s, "
                                                 f"{self.peaks.gbps:.0f} GB/s (ridge {ridge:.0f} FLOP/B)")
        ax.legend(loc="best", fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP / byte)")
        ax.set_ylabel("achieved TFLOP/s")
        title = f"trident kernels on {self.device}: {self.total_ms:.3f} ms over {len(self.steps)} launches"
        ax.set_title(title + ("\n(interpreter wall clock: not GPU performance)" if self.caveat else ""),
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


# ---------------------------------------------------------------------- cost model ----
def _stored_bytes(layout) -> int:
    """Bytes a tensor occupies in memory (broadcast dims, stride 0, count once)."""
    n = math.prod(size for size, stride in zip(layout.shape, layout.strides) if stride != 0)
    return n * layout.dtype.itemsize


def step_cost(step, plan) -> tuple[float, float]:
    """(FLOPs, bytes read + written) of one plan step, from its problem and its tensors' layouts."""
    values = list(step.inputs) + list(step.outputs)
    moved = sum(_stored_bytes(plan.layouts[v]) for v in dict.fromkeys(values) if v in plan.layouts)
    return float(_flops(step, plan)), float(moved)


def fused_ops(source: str) -> int:
    """How many IR ops a generated kernel fuses (its header lists one per line)."""
    lines = source.splitlines()
    if "# IR nodes fused here:" not in lines:
        return 1
    count = 0
    for line in lines[lines.index("# IR nodes fused here:") + 1:]:
        if not line.startswith("#   "):
            break
        count += 1
    return max(1, count)


def _flops(step, plan) -> float:
    p = problem_of(step.source) if step.kind == "kernel" else {}
    nodes = fused_ops(step.source) if step.kind == "kernel" else 1
    template = p.get("template")
    if template == "matmul" and "batch" in p:
        return 2.0 * p["M"] * p["N"] * p["K"] * p["batch"]
    if template in ("matmul", "conv", "depthwise"):  # conv problems: K = C/groups * KH * KW
        return 2.0 * p["M"] * p["N"] * p["K"] * p.get("groups", 1)
    if template == "pool":
        return float(p["M"] * p["C"] * p.get("KH", 1) * p.get("KW", 1))
    if template == "reduction":
        return float(p["rows"] * p["length"] * (nodes + 3))  # about: loads, the reduce, the math
    if template == "scan":
        return float(p["rows"] * p["length"] * (nodes + 1))  # about: the running sum, the math
    if template == "pointwise":
        return float(p["numel"] * nodes)
    if template == "attention":
        return attention_flops(p["BH"], p["Lq"], p["Lk"], p["D"], p["DV"], p["causal"])
    if template == "mlp":
        return 2.0 * p["M"] * p["H"] * (p["C_IN"] + p["C_OUT"])
    if template == "grouped_mm":  # (every row counted: the rows past the groups are few)
        return 2.0 * p["S"] * p["K"] * p["N"]
    if step.kind != "torch":
        return 0.0
    node = step.node  # a torch step: estimate from its node
    out = math.prod(plan.layouts[node.outputs[0]].shape)
    if node.op == "matmul":
        return 2.0 * out * plan.layouts[node.inputs[0]].shape[-1]
    return float(out)


def _template(step) -> str:
    return problem_of(step.source).get("template", "kernel") if step.kind == "kernel" else "torch"


# -------------------------------------------------------------------------- timing ----
def _time_cuda(run, repeat: int, keep: list, capture: bool) -> float:
    """ms of one run(): `repeat` launches captured in one CUDA graph, its replay timed (a kernel's
    time without Python's launch cost). Steps that run through torch may not be capturable: those
    (capture=False) are timed as `repeat` back-to-back eager runs."""
    if not capture:
        return timing.events_ms(run, repeat)
    ms, graph = timing.graph_ms(run, repeat)
    keep.append(graph)  # its pool holds outputs that later steps read
    return ms


def engine_dtype(plan) -> torch.dtype:
    for step in plan.kernel_steps():
        dtype = problem_of(step.source).get("dtype")
        if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
            return getattr(torch, dtype)
    return torch.float16


def _median_ms(fn) -> float:
    return timing.summarize(timing.latencies_ms(fn, 10, warmup=3))["median_ms"]


def _matmul_tflops(device, dtype: torch.dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / (_median_ms(lambda: torch.matmul(a, b)) * 1e-3) / 1e12


def _copy_gbps(device, nbytes: int = 1 << 30) -> float:
    src = torch.empty(nbytes // 2, device=device, dtype=torch.float16)
    dst = torch.empty_like(src)
    return 2 * nbytes / (_median_ms(lambda: dst.copy_(src)) * 1e-3) / 1e9


def measure_peaks(device=None, dtype: torch.dtype = torch.float16) -> Peaks:
    """Measured roofline peaks of a GPU: an 8192^3 torch.matmul at `dtype`, and a 1 GiB
    device-to-device copy (read + write)."""
    if not torch.cuda.is_available():
        raise RuntimeError("measure_peaks needs a CUDA GPU; give Peaks(tflops, gbps) instead")
    device = torch.device(device or "cuda")
    with torch.cuda.device(device):
        tflops, gbps = _matmul_tflops(device, dtype), _copy_gbps(device)
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device)
    return Peaks(tflops, gbps, f"measured on {name}: {str(dtype).replace('torch.', '')} "
                               f"matmul 8192^3, 1 GiB copy")


def profile_engine(engine, inputs, repeat: int | None = None, peaks: Peaks | None = None,
                   measure: bool = True) -> ProfileReport:
    """Time every kernel step of `engine` on `inputs` (one eager run, each step timed alone).

    repeat: runs per step (default 20 on a GPU, 3 in the interpreter). peaks: the roofline's
    Peaks; measured on the GPU when None and `measure` (the interpreter has no roofline).
    Inputs on another device are moved to the engine's.
    """
    on_gpu = engine.device.type == "cuda"
    repeat = repeat or (20 if on_gpu else 3)
    inputs = [x.to(engine.device) for x in inputs]
    plan = engine.plan
    if peaks is None and on_gpu and measure:
        peaks = measure_peaks(engine.device, engine_dtype(plan))
    times: dict[int, float] = {}
    graphs: list = []

    def on_step(k, step, run, env):
        if step.kind == "view":
            run()
        elif on_gpu:
            times[k] = _time_cuda(run, repeat, graphs, capture=step.kind == "kernel")
        else:
            times[k] = timing.wall_ms(run, repeat)

    engine.run_steps(*inputs, on_step=on_step)
    graphs.clear()
    whole = {"engine": timing.events_ms(lambda: engine(*inputs), repeat)} if on_gpu else {}
    rows = []
    for k, ms in times.items():
        step = plan.steps[k]
        flops, moved = step_cost(step, plan)
        name = step.name if step.kind == "kernel" else step.node.op
        rows.append(StepProfile(k, name, step.kind, _template(step), ms, flops, moved))
    if peaks is not None:
        for row in rows:
            attainable = min(peaks.tflops * 1e12, row.intensity * peaks.gbps * 1e9)
            if attainable > 0 and row.time_ms > 0:
                row.roof_pct = 100 * (row.flops / (row.time_ms * 1e-3)) / attainable
    rows.sort(key=lambda r: -r.time_ms)
    device = (torch.cuda.get_device_name(engine.device) if on_gpu
              else "CPU (Triton interpreter)")
    report = ProfileReport(device, rows, peaks, repeat, "" if on_gpu else CPU_CAVEAT, whole_ms=whole)
    report.notes.append("FLOPs of pointwise and reduction kernels are estimates (one per op and "
                        "element); bytes count each tensor a step reads or writes once")
    if any(r.roof_pct is not None and r.roof_pct > 100 for r in rows):
        report.notes.append("above 100% of the roof: the kernel's tensors stay in L2 between the "
                            "repeated runs (the roof is DRAM bandwidth)")
    return report
