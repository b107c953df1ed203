"""`trident explain`: text report, fusion disabled, and the HTML page checked in headless chromium."""
import html.parser
import re
import shutil
import subprocess

import pytest

from trident.compiler.build import import_model
from trident.models import MODELS
from trident.tools.cli import main
from trident.tools.explain import explain_graph, render_text
from trident.tools.explain_html import graph_boxes, layout


def graph_of(name, batch=2):
    build, make_inputs = MODELS[name]
    return import_model(build(), make_inputs(batch))


def test_explain_text_ends_with_kernel_count(capsys):
    assert main(["explain", "mlp", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "7 nodes -> 4 kernels"
    assert "== fusion groups ==" in out and any("fused into matmul group" in line for line in out)
    assert any(line.startswith("== kernel matmul_matmul_relu") for line in out)


def test_no_fuse_gives_one_kernel_per_op():
    g = graph_of("mlp")
    fused, unfused = explain_graph(g, "fp32"), explain_graph(g, "fp32", fuse_ops=False)
    assert fused.num_kernels == 4
    assert unfused.num_kernels == len(unfused.program.graph.nodes) == 7
    assert all(len(s.group.nodes) == 1 for s in unfused.program.steps)
    assert "fusion disabled" in render_text(unfused)


def test_layout_places_producers_above_consumers():
    ex = explain_graph(graph_of("resnet_tiny"), "fp16")
    boxes = graph_boxes(ex)
    width, height = layout(boxes)
    by_key = {b.key: b for b in boxes}
    for b in boxes:
        assert 0 <= b.x <= width and 0 <= b.y <= height
        assert all(by_key[p].y < b.y for p in b.preds)
    spots = [(round(b.x), round(b.y)) for b in boxes]
    assert len(spots) == len(set(spots)), "two boxes on one spot"


class _Dom(html.parser.HTMLParser):
    """Counts what the browser's DOM holds: groups, graph nodes, edges, <details>, summary."""

    def __init__(self):
        super().__init__()
        self.groups, self.nodes, self.edges, self.details, self.svgs = [], [], 0, 0, 0
        self.summary, self._in_summary = [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "").split()
        if tag == "section" and "group" in cls:
            self.groups.append(a)
        if tag == "g" and "node" in cls:
            self.nodes.append(a)
        if tag == "path" and "edge" in cls:
            self.edges += 1
        self.details += tag == "details"
        self.svgs += tag == "svg"
        self._in_summary = tag == "p" and "summary" in cls

    def handle_data(self, data):
        if self._in_summary:
            self.summary.append(data.strip())
            self._in_summary = False


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    return exe


def _browser(exe, tmp_path, *args):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_page_in_headless_chromium(tmp_path, capsys):
    exe = _chromium()
    page = tmp_path / "report.html"
    assert main(["explain", "resnet_tiny", "--precision", "fp16", "--no-source",
                 "--html", str(page)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-2]
    ex = explain_graph(graph_of("resnet_tiny"), "fp16")
    assert summary == ex.summary()
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=", page.read_text())  # self-contained

    done = _browser(exe, tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    steps = ex.program.steps
    assert len(dom.groups) == len(steps)
    assert [g["data-kind"] for g in dom.groups] == [s.group.kind for s in steps]
    assert len(dom.nodes) == sum(len(s.group.nodes) for s in steps)
    assert {n["data-group"] for n in dom.nodes} == {str(k) for k in range(len(steps))}
    assert dom.svgs == 1 and dom.edges >= len(dom.nodes)
    kernels = sum(s.kernel is not None for s in steps)
    assert dom.details == kernels + 1 + len(ex.trace.after_pass)  # sources, imported IR, passes
    assert dom.summary == [ex.summary(), ex.summary()]

    shot = tmp_path / "page.png"
    done = _browser(exe, tmp_path, "--hide-scrollbars", "--window-size=1200,900",
                    f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 10_000
    image = pytest.importorskip("PIL.Image").open(shot).convert("RGB")
    colours = image.resize((120, 90)).getcolors(120 * 90)
    assert len(colours) > 20, "the screenshot is (nearly) blank"


@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"], ["fusion-check", "--help"],
                                  ["profile", "--help"], ["layerwise", "--help"]])
def test_help_texts_render(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0 and "usage: trident" in capsys.readouterr().out


def _explain_torch_compile(tmp_path, capsys, module_source: str) -> str:
    """`trident explain FILE:make --torch-compile` of a file holding `module_source` (which defines
    make()); its printed report."""
    from trident.tools.cli import main

    source = tmp_path / "model.py"
    source.write_text("import torch\n" + module_source)
    assert main(["explain", f"{source}:make", "--torch-compile", "--precision", "fp32"]) == 0
    return capsys.readouterr().out


def test_explain_torch_compile_lists_what_runs_in_torch(tmp_path, capsys):
    out = _explain_torch_compile(tmp_path, capsys,
                                 "class M(torch.nn.Module):\n"
                                 "    def __init__(self):\n"
                                 "        super().__init__()\n"
                                 "        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)\n"
                                 "    def forward(self, x):\n"
                                 "        return self.b(torch.cummax(torch.relu(self.a(x)), dim=1).values)\n"
                                 "def make():\n"
                                 "    return M().eval(), (torch.randn(2, 8),)\n")
    assert "2 trident partition(s)" in out and "left in torch: 1" in out
    assert "torch.cummax (node cummax): no trident converter" in out


def test_explain_torch_compile_names_an_op_in_torch_inside_an_engine(tmp_path, capsys):
    """index_add of 32 rows into 4: more updates a row than the scatter kernel takes (JetMoE's
    expert outputs summed into their tokens so), so torch runs it inside the engine, and the
    report says which op, at which node, and why."""
    out = _explain_torch_compile(tmp_path, capsys,
                                 "class M(torch.nn.Module):\n"
                                 "    def forward(self, x, rows):\n"
                                 "        return torch.zeros(4, 8).index_add(0, rows, x.relu()) * 2\n"
                                 "def make():\n"
                                 "    return M().eval(), (torch.randn(32, 8), torch.randint(0, 4, (32,)))\n")
    assert "1 op(s) in torch inside engines" in out
    assert "inside an engine: scatter_elements (node " in out and "32 updates into rows of 4" in out
