"""What a new user meets in the first hour on a CPU-only machine: the torch.compile backend with no
trident import, `import trident`, models from the working directory, int8 debugging tools, one
default precision, helpful --help, one-line errors, output folders, batch checks, progress bars,
a quiet banner, and the extras an ONNX export needs."""
from __future__ import annotations

import argparse
import ast
import inspect
import io
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch

from trident.compiler import config
from trident.tools.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("compiler", "kernels", "runtime", "models")


def python(code: str, cwd=None, drop=("TRITON_INTERPRET",), timeout: int = 600, args=()):
    """Run `code` in a fresh interpreter (trident importable as in this test run)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err and "\n" not in err and "Traceback" not in err, captured.err
    return err


# ------------------------------------------------------------------- torch.compile ----
def test_torch_compile_backend_without_importing_trident_or_setting_the_interpreter():
    """torch imports triton before it loads the backend; trident must still run its kernels (in
    Triton's interpreter on a CPU-only machine) with no TRITON_INTERPRET in the environment."""
    result = python("""
        import sys, torch
        nn = torch.nn
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval().to(device)
        x = torch.randn(3, 8, device=device)
        assert not any(m == "trident" or m.startswith("trident.") for m in sys.modules)
        out = torch.compile(model, backend="trident")(x)
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
        from trident.compiler.dynamo import TridentSubgraph  # the backend really ran
        print("ok")
    """, drop=("TRITON_INTERPRET", "TRIDENT_QUIET"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
    if not torch.cuda.is_available():
        assert result.stderr.count("Triton kernels run in the interpreter") == 1


# ------------------------------------------------------------------ import trident ----
def test_import_trident_gives_the_public_interface():
    import trident
    import trident.compiler
    import trident.runtime

    assert trident.build_engine is trident.compiler.build_engine
    assert trident.load_engine is trident.compiler.load_engine
    assert isinstance(trident.__version__, str) and trident.__version__[0].isdigit()


def test_a_python_started_in_a_checkout_imports_that_checkout():
    result = python("import trident, trident.compiler; print(trident.compiler.__file__)", cwd=REPO,
                    drop=("PYTHONPATH",))
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()).resolve() == REPO / "compiler" / "__init__.py"


# ------------------------------------------------------------- models from the cwd ----
MYMODELS = """
import torch

def get_model():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU()).eval()
    return model, (torch.randn(2, 6),)
"""


def test_compile_finds_a_module_in_the_working_directory(tmp_path):
    """As the console script runs it: sys.path[0] is the script's folder, not the working one."""
    (tmp_path / "mymodels.py").write_text(MYMODELS)
    script = tmp_path / "bin" / "trident"
    script.parent.mkdir()
    script.write_text(textwrap.dedent("""
        from trident.tools.cli import main
        assert main(["compile", "mymodels:get_model", "-o", "out/a.engine"]) == 0
        assert main(["compile", "mymodels.py:get_model", "-o", "out/b.engine"]) == 0
    """))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "a.engine").is_file() and (tmp_path / "out" / "b.engine").is_file()


def test_a_missing_module_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(capsys, ["compile", "nomodels:get_model"])
    assert "cannot load model 'nomodels:get_model'" in err and "nomodels" in err


# ------------------------------------------------------------ int8 calibration ----
def test_profile_and_layerwise_int8_calibrate_on_random_batches(capsys):
    assert main(["profile", "mlp", "--precision", "int8", "--calibration", "random:2",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr()
    assert "calibrating int8 on 2 batch(es) of random inputs" in out.err
    assert "qmatmul" in out.out or "matmul" in out.out
    assert main(["layerwise", "mlp", "--precision", "int8", "--tol", "0.5"]) in (0, 1)
    out = capsys.readouterr()
    assert "calibrating int8 on 4 batch(es)" in out.err and "layer-wise comparison: trident int8" in out.out


def test_layerwise_int8_reads_a_calibration_cache(tmp_path, capsys):
    from trident.compiler import build_engine
    from trident.models import MODELS

    build, make_inputs = MODELS["mlp"]
    cache = tmp_path / "mlp.calib"
    build_engine(build(), "int8", make_inputs(2), calibration=[make_inputs(2)], calibration_cache=cache)
    assert main(["layerwise", "mlp", "--precision", "int8", "--calibration", str(cache), "--tol", "0.5"]) in (0, 1)
    out = capsys.readouterr()
    assert "random inputs" not in out.err and "layer-wise comparison: trident int8" in out.out


def test_compile_and_explain_int8_with_random_calibration(tmp_path, capsys):
    engine = tmp_path / "mlp-int8.engine"
    assert main(["compile", "mlp", "--precision", "int8", "--calibration", "random:2", "-o", str(engine)]) == 0
    assert "int8" in capsys.readouterr().out and engine.is_file()
    assert main(["explain", "mlp", "--precision", "int8", "--no-source"]) == 0
    out = capsys.readouterr()
    assert "random inputs" in out.err and "precision: int8" in out.out


def test_bad_calibration_arguments_are_one_line(tmp_path, capsys):
    err = one_line_error(capsys, ["profile", "mlp", "--precision", "int8", "--calibration", "random:0"])
    assert "random:N with N >= 1" in err
    err = one_line_error(capsys, ["layerwise", "mlp", "--precision", "int8", "--calibration",
                                  str(tmp_path / "missing.calib")])
    assert "no such calibration cache file" in err
    err = one_line_error(capsys, ["compile", "mlp", "--calibration", "random:2", "-o", str(tmp_path / "x.engine")])
    assert "--calibration is for --precision int8" in err
    err = one_line_error(capsys, ["compile", "mlp", "--precision", "int8", "-o", str(tmp_path / "x.engine")])
    assert "calibration" in err and not (tmp_path / "x.engine").exists()


# ------------------------------------------------------------- one precision story ----
def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


def test_one_default_precision_everywhere():
    from trident.compiler import build_engine
    from trident.compiler import build as build_module
    from trident.compiler.dynamo import DEFAULTS

    assert config.DEFAULT_PRECISION == "fp32"
    assert inspect.signature(build_engine).parameters["precision"].default == config.DEFAULT_PRECISION
    assert inspect.signature(build_module.build_engine).parameters["precision"].default == config.DEFAULT_PRECISION
    assert DEFAULTS["precision"] == config.DEFAULT_PRECISION
    for command in ("compile", "profile", "layerwise", "explain", "demo"):
        assert _subparser(command).get_default("precision") == config.DEFAULT_PRECISION, command


# --------------------------------------------------------------------------- help ----
def _all_parsers(parser, prefix="trident"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{prefix} {name}")


def test_help_shows_every_default():
    for name, parser in _all_parsers(build_parser()):
        text = "".join(parser.format_help().split())  # (help wraps long defaults anywhere)
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                default = "".join(f"(default: {action.default})".split())
                assert default in text, f"{name} {action.option_strings}"


def test_help_and_import_say_nothing_of_the_interpreter():
    """The notice comes once, when kernels are about to run: not at import, not for --help."""
    result = python("""
        import sys
        import trident
        from trident.compiler import config
        from trident.tools.cli import main
        for argv in (["--help"], ["compile", "--help"], ["bench", "kernels", "--help"]):
            try:
                main(argv)
            except SystemExit as done:
                assert done.code == 0
        print("MARK", file=sys.stderr, flush=True)
        config.notice_interpreter()
        config.notice_interpreter()
    """, drop=("TRIDENT_QUIET",))
    assert result.returncode == 0, result.stderr
    before, after = result.stderr.split("MARK\n")
    assert before == ""
    assert after.count("no CUDA device") == (0 if torch.cuda.is_available() else 1)


# ------------------------------------------------------------------------- errors ----
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compile", "mlp", "--precision", "fp8"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "invalid choice: 'fp8'" in err and "trident compile --help" in err
    err = one_line_error(capsys, ["run", str(tmp_path / "missing.engine")])
    assert "missing.engine" in err


def test_output_into_a_missing_folder_creates_it(tmp_path, capsys):
    engine = tmp_path / "new" / "deeper" / "mlp.engine"
    assert main(["compile", "mlp", "-o", str(engine)]) == 0
    assert engine.is_file()
    (tmp_path / "file").write_text("")
    err = one_line_error(capsys, ["compile", "mlp", "-o", str(tmp_path / "file" / "mlp.engine")])
    assert "file" in err


def test_run_refuses_a_batch_the_engine_was_not_built_for(tmp_path, capsys):
    static, dynamic = tmp_path / "static.engine", tmp_path / "dynamic.engine"
    assert main(["compile", "mlp", "-o", str(static), "--batch", "1"]) == 0
    assert main(["compile", "mlp", "-o", str(dynamic), "--batch", "1:2:4"]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, ["run", str(static), "--batch", "2"])
    assert "--batch 2" in err and "static shapes for batch 1" in err and "--batch min:opt:max" in err
    err = one_line_error(capsys, ["run", str(dynamic), "--batch", "8"])
    assert "runs batches 1 to 4" in err
    assert main(["run", str(static), "--batch", "1", "--iterations", "1", "--warmup", "0"]) == 0
    assert main(["run", str(dynamic), "--batch", "3", "--iterations", "1", "--warmup", "0"]) == 0
    assert "running batch 3" in capsys.readouterr().out


# ----------------------------------------------------------------------- progress ----
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_calibration_progress_is_a_tqdm_bar_on_a_terminal_only(monkeypatch, terminal):
    from trident.compiler import progress as progress_module
    from trident.compiler.ir import GraphBuilder, TensorType
    from trident.compiler.quantize.calibrate import collect_stats

    stream = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(config, "QUIET", False)
    monkeypatch.setattr(progress_module.sys, "stderr", stream)
    b = GraphBuilder("g")
    x = b.input("x", TensorType((2, 3), torch.float32))
    y = b.add1("relu", [x])
    batch = torch.linspace(-1, 1, 6).reshape(2, 3)  # (a random one can be all negative: relu 0)
    stats = collect_stats(b.finish([y]), [(batch,)] * 3, [y], histogram=False)
    assert stats[y].absmax > 0
    if terminal:
        assert "trident: calibrating" in stream.getvalue() and "3/3" in stream.getvalue()
    else:
        assert stream.getvalue() == ""  # logs get no redraws


def test_no_hand_written_carriage_returns_in_the_library():
    for folder in LIBRARY:
        for path in (REPO / folder).rglob("*.py"):
            assert '"\\r' not in path.read_text(), path


# ------------------------------------------------------------------------ packaging ----
def test_the_onnx_export_extra_and_tqdm_are_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("onnxscript") for d in extras["export"])
    assert any(d.startswith("onnxscript") for d in extras["test"])
    assert any(d.startswith("tqdm") for d in project["dependencies"])


def test_library_packages_have_no_argparse_main_and_no_tools_import():
    """Benchmarks, sweeps and experiments live in tools/benchmarks (`trident bench ...`)."""
    for folder in LIBRARY:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                        for alias in node.names}
            imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
            assert "argparse" not in imported, path
            assert not any(m.startswith("trident.tools") for m in imported), path
