"""`trident explain --html`: one self-contained page (no scripts, no external files).

The graph is an SVG laid out here: one row per topological depth (longest path from the inputs),
nodes ordered within a row by the mean position of their producers (one barycentre sweep per
row, twice), edges as curves from producer to consumer. Each node is coloured by its fusion
group and links to that group's section, which lists the reasons the group was formed (or a
fusion refused) and holds the kernel's Triton source in a collapsible <details> block.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 168, 38, 22, 50, 20


@dataclass
class Box:
    key: str
    label: str                 # first line: the op (or "input"/"output")
    sub: str                   # second line: the value or node name
    title: str                 # tooltip
    group: int | None = None   # step index, None for graph inputs and outputs
    preds: list[str] = field(default_factory=list)
    depth: int = 0
    x: float = 0.0
    y: float = 0.0


def group_colour(k: int, kind: str) -> tuple[str, str]:
    """(fill, stroke) of group k: hues spread by the golden angle; views are grey (no kernel)."""
    if kind == "view":
        return "#eeeeee", "#888888"
    hue = (k * 137.508) % 360
    light = (84, 74, 79)[k % 3]  # hues recur after a dozen groups; lightness tells them apart
    return f"hsl({hue:.0f},70%,{light}%)", f"hsl({hue:.0f},55%,35%)"


def _short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def graph_boxes(ex) -> list[Box]:
    """Boxes for the graph inputs, every node of every step (in execution order), the outputs."""
    graph = ex.program.graph
    boxes: dict[str, Box] = {}
    made_by: dict[str, str] = {}
    for name in graph.inputs:
        boxes[f"in:{name}"] = Box(f"in:{name}", "input", name, f"input {name}: {graph.types[name]}")
        made_by[name] = f"in:{name}"
    for k, step in enumerate(ex.program.steps):
        label = step.kernel.name if step.kernel else step.kind
        for j, node in enumerate(step.group.nodes):
            key = f"n{k}.{j}"
            types = ", ".join(str(graph.types[o]) for o in node.outputs if o in graph.types)
            title = f"{node}  -> {types}\n[{k}] {step.group.kind} group, {step.kind} {label}"
            preds = list(dict.fromkeys(made_by[i] for i in node.inputs if i in made_by))
            boxes[key] = Box(key, node.op, node.name or node.outputs[0], title, k, preds)
            made_by.update((o, key) for o in node.outputs)
    for name in graph.outputs:
        preds = [made_by[name]] if name in made_by else []
        boxes[f"out:{name}"] = Box(f"out:{name}", "output", name,
                                   f"output {name}: {graph.types[name]}", None, preds)
    return list(boxes.values())


def layout(boxes: list[Box]) -> tuple[float, float]:
    """Set every box's depth and position; returns the drawing's (width, height)."""
    by_key = {b.key: b for b in boxes}
    for b in boxes:  # boxes come in execution order, so producers are placed first
        b.depth = 1 + max((by_key[p].depth for p in b.preds), default=-1) if b.preds else \
            (0 if b.label == "input" else 1)
    rows: dict[int, list[Box]] = {}
    for b in boxes:
        rows.setdefault(b.depth, []).append(b)
    widest = max(len(r) for r in rows.values())
    width = 2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X

    def place(row: list[Box]) -> None:
        span = len(row) * BOX_W + (len(row) - 1) * GAP_X
        for i, b in enumerate(row):
            b.x = (width - span) / 2 + i * (BOX_W + GAP_X)

    for depth in sorted(rows):
        place(rows[depth])
    for _ in range(2):  # barycentre sweeps: pull each node under its producers
        for depth in sorted(rows)[1:]:
            row = rows[depth]
            centre = {b.key: (sum(by_key[p].x for p in b.preds) / len(b.preds) if b.preds else b.x)
                      for b in row}
            row.sort(key=lambda b: centre[b.key])
            place(row)
    for depth, row in rows.items():
        for b in row:
            b.y = MARGIN + depth * (BOX_H + GAP_Y)
    return width, 2 * MARGIN + (max(rows) + 1) * (BOX_H + GAP_Y) - GAP_Y


def render_svg(ex) -> str:
    boxes = graph_boxes(ex)
    width, height = layout(boxes)
    by_key = {b.key: b for b in boxes}
    steps = ex.program.steps
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
             f'aria-label="IR graph coloured by fusion group">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
             'fill="#666"/></marker></defs>']
    for b in boxes:  # edges first, under the boxes
        for j, p in enumerate(b.preds):  # inputs arrive spread along the box's top edge
            a = by_key[p]
            x1, y1 = a.x + BOX_W / 2, a.y + BOX_H
            x2, y2 = b.x + BOX_W * (j + 1) / (len(b.preds) + 1), b.y
            mid = (y1 + y2) / 2
            inside = a.group is not None and a.group == b.group
            cls = "edge internal" if inside else "edge"
            parts.append(f'<path class="{cls}" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} '
                         f'{x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}" marker-end="url(#arrow)"/>')
    for b in boxes:
        if b.group is None:
            fill, stroke, cls, href = "#ffffff", "#333333", "io", ""
        else:
            fill, stroke = group_colour(b.group, steps[b.group].group.kind)
            cls, href = f"node {steps[b.group].kind}", f"#group-{b.group}"
        rx = BOX_H / 2 if b.group is None else 5
        body = (f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="{rx:.0f}" '
                f'fill="{fill}" stroke="{stroke}"/>'
                f'<text x="{b.x + BOX_W / 2:.1f}" y="{b.y + 15:.1f}" class="op">{e(b.label)}</text>'
                f'<text x="{b.x + BOX_W / 2:.1f}" y="{b.y + 30:.1f}" class="name">'
                f'{e(_short(b.sub))}</text><title>{e(b.title)}</title>')
        group = "" if b.group is None else f' data-group="{b.group}"'
        if href:
            body = f'<a href="{href}">{body}</a>'
        parts.append(f'<g class="{cls}"{group}>{body}</g>')
    parts.append("</svg>")
    return "\n".join(parts)


def _group_section(k: int, step) -> str:
    e = html.escape
    group = step.group
    fill, stroke = group_colour(k, group.kind)
    nodes = ", ".join(n.name or n.op for n in group.nodes)
    label = step.kernel.name if step.kernel else f"{step.kind}: {group.nodes[0].op}"
    reasons = "".join(f'<li class="{"refused" if "not fused" in r else "formed"}">{e(r)}</li>'
                      for r in group.reasons)
    if step.kernel is not None:
        lines = step.kernel.source.count("\n") + 1
        code = (f'<details class="source"><summary>Triton source of {e(step.kernel.name)} '
                f'({lines} lines)</summary><pre><code>{e(step.kernel.source)}</code></pre></details>')
    elif step.kind == "view":
        code = '<p class="note">No kernel: the outputs are views of the input (strides only).</p>'
    else:
        code = '<p class="note">No kernel: this op runs through torch.</p>'
    return (f'<section class="group" id="group-{k}" data-kind="{e(group.kind)}" '
            f'data-step="{e(step.kind)}" data-nodes="{len(group.nodes)}">'
            f'<h3><span class="swatch" style="background:{fill};border-color:{stroke}"></span>'
            f'[{k}] {e(label)} <span class="kind">{e(group.kind)}, {len(group.nodes)} node(s)</span>'
            f'</h3><p class="io">{e(", ".join(step.inputs))} &#8594; {e(", ".join(step.outputs))}'
            f'</p><p class="nodes">nodes: {e(nodes)}</p><ul class="reasons">{reasons}</ul>{code}'
            f'</section>')


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:0 0 4px} .summary{font:600 16px monospace;background:#f4f4f4;
padding:6px 10px;display:inline-block;border-radius:4px}
.graphbox{overflow:auto;max-height:85vh;border:1px solid #ddd;background:#fcfcfc}
svg .edge{fill:none;stroke:#999;stroke-width:1.3} svg .edge.internal{stroke:#555;stroke-dasharray:4 3}
svg text{text-anchor:middle;font-family:monospace} svg .op{font-size:12px;font-weight:700}
svg .name{font-size:10px;fill:#444} svg .node.view rect{stroke-dasharray:5 3}
svg .node.torch rect{stroke-width:2.5} svg a:hover rect{stroke-width:3}
.group{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:8px 0}
.group:target{outline:3px solid #4a90d9} .swatch{display:inline-block;width:14px;height:14px;
border:2px solid;border-radius:3px;vertical-align:-2px;margin-right:6px}
.kind{font-weight:400;color:#666} .io,.nodes{font-family:monospace;font-size:12px;margin:2px 0;
word-break:break-all} .reasons{margin:4px 0;font-size:13px} .refused{color:#a33}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px} .note{color:#666;font-size:13px}
details summary{cursor:pointer;color:#1f5fa8} .legend span{margin-right:14px}
"""


def render_html(ex) -> str:
    e = html.escape
    steps = ex.program.steps
    groups = "\n".join(_group_section(k, s) for k, s in enumerate(steps))
    irs = [("imported IR", ex.imported)] + [(f"after {n}", g) for n, g in ex.trace.after_pass]
    ir = "\n".join(f'<details class="ir"><summary>{e(name)} ({len(g.nodes)} nodes)</summary>'
                   f"<pre>{e(str(g))}</pre></details>" for name, g in irs)
    fusion = "fusion on" if ex.fused else "fusion disabled: one kernel per op"
    kinds = {}
    for s in steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    counts = ", ".join(f"{n} {k} step(s)" for k, n in kinds.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>trident explain: {e(ex.imported.name)}</title><style>{CSS}</style></head>
<body>
<h1>trident explain: {e(ex.imported.name)}</h1>
<p>precision {e(ex.precision)}, {fusion}; {counts}</p>
<p class="summary" id="summary">{e(ex.summary())}</p>
<h2>Graph</h2>
<p class="legend"><span>colour = fusion group (click a node for its kernel)</span>
<span>solid edge: tensor in memory between kernels</span><span>dashed: stays in registers</span>
<span>grey dashed box: view (no kernel)</span><span>thick border: runs through torch</span></p>
<div class="graphbox">{render_svg(ex)}</div>
<h2>Kernels and fusion groups ({len(steps)} steps)</h2>
{groups}
<h2>IR after each pass</h2>
{ir}
<p class="summary">{e(ex.summary())}</p>
</body></html>
"""
