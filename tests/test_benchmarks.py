"""The benchmark command still runs and checks its targets right.

Every section of benchmarks/run.py runs as a smoke run (`--quick`: tiny sizes, one round) in a
process of its own, which writes a docs/benchmarks.md-shaped file; PyTorch is optional there
(its columns say n/a). The target checks run on made-up numbers. No timing is asserted.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"


def _load_run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                 # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


run = _load_run()
SECTIONS = {s.name: s for s in run.SECTIONS}
# The smallest conv run that still meets every implementation (the seed's method, PyTorch in
# both layouts) and the threads table.
SECTION_ARGS = {"conv": ["--shapes", "lenet 5x5", "--dtypes", "float32"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SECTIONS))
def test_section_smoke_run_writes_its_part(name, tmp_path):
    section = SECTIONS[name]
    if section.missing():
        pytest.skip(f"{name} needs {', '.join(section.missing())}")
    out = tmp_path / "benchmarks.md"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--sections", name,
                           "--output", str(out), *SECTION_ARGS.get(name, [])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    for heading in ("## Machine", "## Command", "## Summary", "## Reading",
                    f"## {section.title}"):
        assert f"\n{heading}\n" in text
    assert "Smoke run (`--quick`)" in text
    assert f"python benchmarks/run.py --quick --sections {name}" in text
    body = text[text.index(f"\n## {section.title}\n"):]
    assert "\n|---|" in body                                    # its table
    summary = text[text.index("## Summary"):text.index("## Reading")]
    assert f"**{section.title}**\n\n- " in summary
    if importlib.util.find_spec("torch") is None:
        assert "n/a" in body


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        run.parse(["--sections", "conv,pools"])
    assert "--sections: unknown pools; choose from conv, pooling" in capsys.readouterr().err


def test_rounds_scale_per_section_and_quick_runs_one():
    options = run.Options(rounds=4)
    assert [SECTIONS[n].rounds(options) for n in ("conv", "pooling", "models")] == [4, 12, 4]
    quick = run.Options(rounds=4, quick=True)
    assert {s.rounds(quick) for s in run.SECTIONS} == {1}


def test_ratio_targets_say_met_missed_and_what_is_missing():
    ratios = {"a": 1.2, "b": 1.8, "c": None}
    line = run.ratio_targets(ratios, ("a", "b", "c", "d"), 1.5, 2.0)
    assert line == ("geometric mean 1.47x (target <= 1.5: met), worst 1.80x (b; target <= 2.0: "
                    "met); not measured in this run: c, d")
    assert "target <= 1.4: missed" in run.ratio_targets(ratios, ("a", "b"), 1.4, None)
    assert "worst 1.80x (b; target <= 1.5: missed)" in run.ratio_targets(ratios, ("b",), None,
                                                                         1.5)
    assert run.ratio_targets({}, ("a",), 1.5, 2.0) == "n/a (no PyTorch times in this run)"


def test_verdicts():
    assert run.verdict(1.0, 1.0) == "met"
    assert run.verdict(1.01, 1.0) == "missed"
    assert run.verdict(2.9, 3.0, at_least=True) == "missed"
    assert run.verdict(None, 3.0) == "n/a"


def test_issue_18_targets_span_pooling_and_layers():
    ratios = dict.fromkeys(run.ISSUE_18_ROWS, 1.0) | {"ReLU fwd+bwd": 2.6}
    got = run.issue_18(ratios)
    assert "worst 2.60x (ReLU fwd+bwd; target <= 2.5: missed)" in got[0]
    assert "target <= 1.5: met" in got[0]
    assert "max_pool 3x3 s2 p1, fwd n/a" in got[1]


def test_model_targets_per_model_bound_and_peak():
    cases = [SimpleNamespace(model=m, name=f"{m} {t}") for m in ("resnet18", "mobilenet_v2")
             for t in ("inference", "train step")]
    rows = [dict(ratio=1.4, peak_mb=3.0, activation_mb=2.0), dict(ratio=1.6, peak_mb=None),
            dict(ratio=1.9, peak_mb=5.0, activation_mb=2.0), dict(ratio=1.0, peak_mb=None)]
    resnet, mobilenet = run.model_targets(cases, rows)
    assert "worst 1.60x (resnet18 train step; target <= 1.5: missed)" in resnet
    assert "peak up to 1.50x the largest activation (target about 2: met)" in resnet
    assert "target <= 2.0: met" in mobilenet
    assert "peak up to 2.50x the largest activation (target about 2: missed)" in mobilenet


def test_onnx_targets():
    rows = [dict(reference=2.0, npconv=0.1, ort=0.05), dict(reference=None, npconv=0.4, ort=0.1)]
    (line,) = run.onnx_targets({"resnet18": rows})
    assert "at least 20.00x npconv.onnx's time (target >= 10: met)" in line
    assert "up to 4.00x onnxruntime's (target <= 3: missed)" in line


def test_onnx_floor_table_sets_the_straight_line_program_against_onnxruntime():
    bench = run.script("onnx", module="onnx_bench")
    rows = [dict(batch=1, npconv=0.018, line=0.013, bound=0.0116, ort=0.004, line_diff=1e-7)]
    (row,) = bench.floor_table({"mobilenet_v2": rows})[2:]
    assert row == ("| mobilenet_v2 | 1 | 18.0 | 13.0 | 11.6 | 4.0 | 4.50x | 3.25x | 2.90x | "
                   "1.0e-07 |")


def test_reading_block_is_kept_when_the_file_is_regenerated(tmp_path):
    path = tmp_path / "benchmarks.md"
    assert run.kept_reading(path) == [run.READING_PLACEHOLDER]
    path.write_text(f"# Benchmarks\n\n{run.READING[0]}\nWritten by hand.\n\nTwo paragraphs.\n"
                    f"{run.READING[1]}\n")
    assert run.kept_reading(path) == ["Written by hand.", "", "Two paragraphs."]


def test_command_names_the_unset_openblas_variables(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert run.command(["--shapes", "resnet 3x3"]) == (
        "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py --shapes "
        "'resnet 3x3'")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert run.command([]) == "python benchmarks/run.py"


def test_a_section_that_cannot_run_says_why(monkeypatch):
    def never(options, rounds):
        raise AssertionError("a section with a missing need must not run")

    absent = run.Section("absent", "Absent", never, needs=("no_such_bench.py",
                                                         "no-such-package"))
    monkeypatch.setattr(run, "SECTIONS", (absent,))
    (report,) = run.run_sections(["absent"], run.Options()).values()
    assert report.body == ["Not run: no_such_bench.py, no-such-package missing."]
    assert report.targets == ["- n/a (not run: no_such_bench.py, no-such-package missing)"]


def test_model_floor_counts_every_convolution_once():
    """benchmarks/model_floor.py on a small input: one row per kind of layer and a sum row
    (MobileNetV2: 17 depthwise layers, 34 1x1, the stem), multiply-adds as the definition
    counts them."""
    spec = importlib.util.spec_from_file_location("model_floor",
                                                  ROOT / "benchmarks" / "model_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    rows = {r["kind"]: r for r in floor.run("mobilenet_v2", batch=1, size=32, rounds=1)}
    assert {k: r["layers"] for k, r in rows.items()} == {"depthwise": 17, "1x1": 34,
                                                        "other": 1, "sum": 52}
    assert rows["sum"]["macs"] == sum(rows[k]["macs"] for k in ("depthwise", "1x1", "other"))
    assert rows["other"]["macs"] == 16 * 16 * 27 * 32               # the stem, stride 2
    assert rows["depthwise"]["macs"] % 9 == 0                           # 3x3 per output
    assert all(r["primitive"] > 0 and r["in_place"] > 0 for r in rows.values())
    assert "| depthwise | 17 |" in floor.table(list(rows.values()), "t")


def test_model_floor_train_times_each_product_of_a_step():
    """benchmarks/model_floor.py --train on a small step: the same 52 layers, three products
    each except the stem's input gradient (its input needs none in a training step), and a
    whole-step time."""
    spec = importlib.util.spec_from_file_location("model_floor",
                                                  ROOT / "benchmarks" / "model_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    with np.errstate(all="raise"):                              # 2x32x32 diverged in 8 steps
        rows = floor.run_train("mobilenet_v2", batch=2, size=64, rounds=1, pause=0.0)
    by_kind = {r["kind"]: r for r in rows}
    assert {k: r["layers"] for k, r in by_kind.items()} == {"depthwise": 17, "1x1": 34,
                                                           "other": 1, "sum": 52}
    assert by_kind["other"]["input grad"] == 0.0                  # the stem's dx: not computed
    assert all(r[k] > 0 for r in rows for k in ("forward", "weight grad", "in_place"))
    assert all(by_kind[k]["input grad"] > 0 for k in ("depthwise", "1x1"))
    assert by_kind["sum"]["whole"] > 0
    text = floor.table_train(rows, "t")
    assert "| 1x1 | 34 |" in text and "Whole step: npconv" in text


def _straight_line_graph(head: str):
    """A small graph of every node benchmarks/straight_line.py knows, NCHW (2, 3, 12, 10) in,
    (2, 5) out: a 3x3 stride-2 Conv with uneven pads and Clip, a depthwise Conv and Relu, a
    1x1 Conv added to the first Clip's output, MaxPool of that sum (windows of negatives
    only at the border), a Clip without max, a stride-2 depthwise Conv, then `head` ("mean":
    ReduceMean, Reshape and Gemm with transB; "pool": GlobalAveragePool, Flatten and Gemm
    without)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, numpy_helper
    from onnx import helper as oh

    rng = np.random.default_rng(0)
    consts = {"w1": rng.standard_normal((8, 3, 3, 3)), "b1": rng.standard_normal(8),
              "wd": rng.standard_normal((8, 1, 3, 3)), "bd": rng.standard_normal(8),
              "wp": rng.standard_normal((8, 8, 1, 1)) / 3, "bp": rng.standard_normal(8) - 4,
              "w2": rng.standard_normal((8, 1, 3, 3)), "b2": rng.standard_normal(8),
              "wg": rng.standard_normal((5, 8) if head == "mean" else (8, 5)),
              "bg": rng.standard_normal(5), "lo": np.array(0.0), "hi": np.array(6.0),
              "floor": np.array(-3.0),
              "axes": np.array([2, 3]), "shape": np.array([0, -1])}
    inits = [numpy_helper.from_array(v.astype(np.int64 if k in ("axes", "shape")
                                              else np.float32), k) for k, v in consts.items()]
    k3 = dict(kernel_shape=[3, 3])
    nodes = [oh.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2],
                          pads=[1, 0, 2, 1], **k3),
             oh.make_node("Clip", ["c1", "lo", "hi"], ["a1"]),
             oh.make_node("Conv", ["a1", "wd", "bd"], ["c2"], group=8, pads=[1, 1, 1, 1], **k3),
             oh.make_node("Relu", ["c2"], ["a2"]),
             oh.make_node("Conv", ["a2", "wp", "bp"], ["c3"]),
             oh.make_node("Add", ["c3", "a1"], ["s"]),
             oh.make_node("MaxPool", ["s"], ["p"], strides=[2, 2], pads=[1, 1, 1, 1], **k3),
             oh.make_node("Clip", ["p", "floor", ""], ["a3"]),
             oh.make_node("Conv", ["a3", "w2", "b2"], ["c4"], group=8, strides=[2, 2],
                          pads=[1, 1, 1, 1], **k3)]
    if head == "mean":
        nodes += [oh.make_node("ReduceMean", ["c4", "axes"], ["m"]),
                  oh.make_node("Reshape", ["m", "shape"], ["f"]),
                  oh.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    else:
        nodes += [oh.make_node("GlobalAveragePool", ["c4"], ["m"]),
                  oh.make_node("Flatten", ["m"], ["f"]),
                  oh.make_node("Gemm", ["f", "wg", "bg"], ["y"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 [2, 3, 12, 10])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
                          initializer=inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])


def _straight_line():
    spec = importlib.util.spec_from_file_location("straight_line",
                                                  ROOT / "benchmarks" / "straight_line.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("head", ["mean", "pool"])
def test_straight_line_program_computes_the_graph(head):
    """benchmarks/straight_line.py, the program `onnx.py --floor` times: its logits equal
    ONNX's reference evaluator's, call after call; its bound, which skips passes, gives
    other numbers; a node it does not know is refused by name."""
    model = _straight_line_graph(head)
    from onnx.reference import ReferenceEvaluator

    straight_line = _straight_line()
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 10)).astype(np.float32)
    reference = ReferenceEvaluator(model)
    program = straight_line.Program(model)
    for batch in (x, 2 * x, x[:1]):                              # buffers reused; a new shape
        want = reference.run(None, {"x": batch})[0]
        np.testing.assert_allclose(program(batch), want, rtol=1e-5, atol=1e-5)
    bound = straight_line.Program(model, free_passes=True)(x[:1])
    assert bound.shape == want.shape and not np.allclose(bound, want)
    model.graph.node[3].op_type = "Sigmoid"
    with pytest.raises(ValueError, match="Sigmoid node"):
        straight_line.Program(model)(x)


def test_straight_line_program_reads_old_clips_and_gives_images_in_onnx_layout():
    """A Clip with its bounds as attributes (opset 6) fused into the Conv before it, and a
    graph whose output is an image: returned (N, C, H, W), as ONNX's evaluator gives it."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, numpy_helper
    from onnx import helper as oh
    from onnx.reference import ReferenceEvaluator

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3))
                                .astype(np.float32) * 3, "w")
    nodes = [oh.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             oh.make_node("Clip", ["c"], ["y"], min=-1.0, max=2.0)]
    info = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "g", [info("x", TensorProto.FLOAT, [1, 3, 5, 7])],
                          [info("y", TensorProto.FLOAT, [1, 4, 5, 7])], initializer=[w])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 10)])
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 7)).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = _straight_line().Program(model)(x)
    assert got.shape == (1, 4, 5, 7) and got.min() == -1 and got.max() == 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head, change, message", [
    ("pool", lambda g: g.node[6].attribute.append(_attr("auto_pad", "SAME_UPPER")), "auto_pad"),
    ("pool", lambda g: g.node[10].attribute.append(_attr("axis", 0)), "axis other than 1"),
    ("pool", lambda g: g.node[11].attribute.append(_attr("transA", 1)), "transA"),
    ("mean", lambda g: g.initializer[-1].CopyFrom(_ints([3, -1], "shape")), "only \\(N, -1\\)"),
])
def test_straight_line_program_refuses_what_it_would_get_wrong(head, change, message):
    """Attributes the program does not implement are refused by name, not ignored."""
    model = _straight_line_graph(head)
    change(model.graph)
    x = np.zeros((2, 3, 12, 10), np.float32)
    with pytest.raises(ValueError, match=message):
        _straight_line().Program(model)(x)


def _attr(name, value):
    from onnx import helper as oh

    return oh.make_attribute(name, value)


def _ints(values, name):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(values, np.int64), name)
