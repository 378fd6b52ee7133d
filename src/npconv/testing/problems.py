"""The data, the right answers and the verdict for one configuration of a conv or a pooling.

`inputs` draws the seeded canonical arrays of a case (x, w, b, dy for a convolution; x, dy for
a pooling, with x drawn from a few integers when the case asks for ties); `expected` computes
npconv's outputs from them (npconv's ops are themselves checked against `npconv.reference` and
PyTorch by the test suite); `evaluate` turns what the user's code produced (`Run`, one per
memory placement) into a `CaseResult`: each output compared, located and diagnosed, and the
placements compared with each other.
"""

from __future__ import annotations

import functools

import numpy as np

import npconv
from npconv.testing.adapters import Adapter, Run
from npconv.testing.compare import KIND, OutputCheck, Tolerance, compare
from npconv.testing.diagnosis import Context, diagnose
from npconv.testing.gradcheck import gradcheck
from npconv.testing.layout import Layout
from npconv.testing.locate import describe
from npconv.testing.pool_diagnosis import pool_backward, pool_forward
from npconv.testing.results import CaseResult, Crash, MemoryIssue

OUTPUTS = {"conv": ("y", "dx", "dw", "db"), "pool": ("y", "dx")}


def _normal(seed: int, role: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal data seeded by the array's role and shape only, so that two cases that
    differ in a feature that leaves an array's shape alone (padding, say) share that array."""
    return np.random.default_rng([seed, role, *shape]).standard_normal(shape)


@functools.lru_cache(maxsize=64)
def inputs(case, seed: int) -> dict[str, np.ndarray]:
    """Seeded canonical inputs: x (N, *S, C), w (conv), b (F,) (conv), dy (N, *P, F).

    Cached (a case runs in several placements): the arrays are shared, never modify them.
    """
    x = case.tie_data() if case.kind == "pool" and case.ties else \
        _normal(seed, 0, case.x_shape)                                   # (N, *S, C)
    dy = _normal(seed, 3, case.y_shape)                                  # (N, *P, F)
    if case.kind == "pool":
        return {"x": x, "dy": dy}
    return {"x": x, "w": _normal(seed, 1, case.w_shape),                 # (*K, C/G, F)
            "b": _normal(seed, 2, (case.out_channels,)), "dy": dy}       # (F,)


def user_inputs(inp: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
    """The canonical inputs in the user's layout (fresh C-contiguous copies)."""
    return {k: layout.to_user(KIND[k], a) if k != "b" else a.copy() for k, a in inp.items()}


def expected(case, inp: dict[str, np.ndarray], bias: bool) -> dict[str, np.ndarray]:
    """npconv's outputs for `case`, canonical layout."""
    x, dy = inp["x"], inp["dy"]
    if case.kind == "pool":
        return {"y": pool_forward(case, x), "dx": pool_backward(case, dy, x)}
    w, b = inp["w"], inp["b"] if bias else None
    kw = {"stride": case.stride, "padding": case.pads, "dilation": case.dilation,
          "groups": case.groups}
    if case.transposed:
        kw["output_padding"] = case.output_padding or 0
        y = npconv.conv_transpose(x, w, b, **kw)                        # (N, *O, F)
        dx, dw, db = npconv.conv_transpose_backward(dy, x, w, bias=bias, **kw)
    else:
        kw["padding_mode"] = case.padding_mode
        y = npconv.conv(x, w, b, **kw)                                  # (N, *P, F)
        dx, dw, db = npconv.conv_backward(dy, x, w, bias=bias, **kw)    # like x, w, (F,)
    return {"y": y, "dx": dx, "dw": dw, "db": db}


def check_output(ctx: Context, name: str, raw) -> OutputCheck:
    """Compare one output with npconv's, locate what is wrong and diagnose it."""
    check, got = compare(name, raw, ctx.expected[name], ctx.layout, ctx.tol)
    if check.ok or check.status == "missing":
        return check
    if check.bad is not None and check.status == "wrong":
        check.where = describe(check.bad, name, ctx.case)
    found = diagnose(ctx, name, raw, got)
    check.causes = tuple(key for key, _ in found)
    check.diagnosis = tuple(text for _, text in found)
    return check


def evaluate(case, runs: dict[str, Run | Crash], *, seed: int, tol: Tolerance,
             layout: Layout, checks: tuple[str, ...], index: int = 0,
             phase: str = "sweep") -> CaseResult:
    """The verdict on one configuration from its runs, keyed by memory placement; the first
    placement's run is the one compared with npconv, the others with it."""
    first, *others = runs
    primary = runs[first]
    notes = _notes(runs.values())
    if isinstance(primary, Crash):
        return CaseResult(index, case, crash=primary, phase=phase, memory=notes)
    inp = inputs(case, seed)
    want = expected(case, inp, primary.bias)
    ctx = Context(case, layout, tol, inp["x"], inp.get("w"),
                  inp.get("b") if primary.bias else None, inp["dy"], want)
    result = CaseResult(index, case, error=primary.error, modified=primary.modified,
                        phase=phase)
    for name in checks:
        if (name == "db" and not primary.bias) or (primary.error and
                                                   name not in primary.outputs):
            continue
        result.outputs[name] = check_output(ctx, name, primary.outputs.get(name))
    issues = [issue for how in others for issue in compare_placements(
        _reference_run(runs, how), runs[how], how, tol, layout)]
    result.memory = tuple(issues) + notes
    if notes:
        for check in result.outputs.values():
            if check.status == "not finite":
                check.diagnosis += ("the NaN come from outside an array: the as_strided view "
                                    "reported above reads there, and the check fills that "
                                    "memory with NaN (otherwise it holds whatever lies there, "
                                    "which changes from run to run)",)
    return result


def _reference_run(runs: dict, how: str):
    """What the run placed `how` is compared with: the strided run with the guarded one
    (both in NaN-filled memory), the others with the first."""
    base = runs.get("guarded") if how == "strided" else None
    return base if isinstance(base, Run) else next(iter(runs.values()))


def _notes(runs) -> tuple[MemoryIssue, ...]:
    notes = [n for r in runs for n in r.notes]
    return tuple(MemoryIssue("view", "", n) for n in dict.fromkeys(notes))


_PLACED = {"guarded": "with the inputs inside buffers of NaN (and freed memory filled with "
                      "NaN)",
           "strided": "with non-contiguous inputs holding the same values (as slices and "
                      "transposes give)"}
_MEANING = {"guarded": "An as_strided view or an index reads past the end of an array.",
            "strided": "The code assumes C-contiguous arrays, e.g. strides computed from the "
                       "shape instead of taken from `a.strides`; call np.ascontiguousarray "
                       "first, or use a.strides."}


def compare_placements(primary: Run, other: Run | Crash, how: str, tol: Tolerance,
                       layout: Layout) -> list[MemoryIssue]:
    """What changed when the inputs were placed `how` ("guarded" or "strided") rather than as
    in `primary`."""
    kind = "outside" if how == "guarded" else "layout"
    head = {"outside": "depends on memory outside your arrays",
            "layout": "depends on how the inputs are laid out in memory"}[kind]
    if isinstance(other, Crash):
        return [MemoryIssue(kind, "", f"the code {head}: {_PLACED[how]}, {other}. "
                                      f"{_MEANING[how]}")]
    if other.error is not None and primary.error is None:
        return [MemoryIssue(kind, "", f"the code {head}: {_PLACED[how]}, {other.error}. "
                                      f"{_MEANING[how]}")]
    issues = []
    for name, a in primary.outputs.items():
        change = _change(a, other.outputs.get(name), tol)
        if change:
            issues.append(MemoryIssue(kind, name, f"{name} {head}: {_PLACED[how]}, it "
                                                  f"{change}. {_MEANING[how]}"))
    return issues


def _change(a, b, tol: Tolerance) -> str:
    """How b differs from a ("" when it does not)."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        return "" if type(a) is type(b) else "is no longer an array of numbers"
    if a.shape != b.shape:
        return f"has shape {b.shape} instead of {a.shape}"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    nan = np.isnan(b64) & ~np.isnan(a64)
    if nan.any():
        where = tuple(int(i) for i in np.argwhere(nan)[0])
        return f"has NaN at {int(nan.sum())} of {b.size} elements (first at {where})"
    with np.errstate(invalid="ignore"):
        diff = ~(np.abs(a64 - b64) <= tol.atol + tol.rtol * np.nanmax(np.abs(a64), initial=0))
    diff &= ~(np.isnan(a64) & np.isnan(b64))
    if not diff.any():
        return ""
    where = tuple(int(i) for i in np.argwhere(diff)[0])
    return f"differs at {int(diff.sum())} of {b.size} elements (first at {where})"


_CONSISTENCY_MAX_ELEMENTS = 400


def consistency(adapter: Adapter, case, seed: int, tol: Tolerance) -> str:
    """Whether the user's dx and dw are the gradients of the user's own forward pass.

    Asked when y is wrong: it tells a wrong forward with a matching backward from two
    independent bugs. Runs the user's code (two calls per element of x and w, so only for
    small cases); returns "" when it cannot be answered.
    """
    inp = inputs(case, seed)
    if not adapter.has_backward or case.kind != "conv" or \
            inp["x"].size + inp["w"].size > _CONSISTENCY_MAX_ELEMENTS:
        return ""
    given = user_inputs(inp, adapter.layout)

    def outputs(dy, x, w):
        run = adapter.run(case, {"x": x.copy(), "w": w.copy(), "b": given["b"].copy(),
                                 "dy": np.array(dy)})
        if run.error:
            raise RuntimeError(str(run.error))
        return run.outputs

    try:
        result = gradcheck(lambda x, w: outputs(given["dy"], x, w)["y"], given["x"],
                           given["w"], dy=given["dy"],
                           grad=lambda d, x, w: [outputs(d, x, w).get(k) for k in ("dx", "dw")],
                           names=("dx", "dw"), rtol=tol.rtol * 10, atol=tol.atol * 10)
    except (RuntimeError, ValueError, TypeError):
        return ""
    if result:
        return ("dx and dw are the exact gradients of this forward pass (central differences "
                "agree): the backward is consistent with it, the forward pass is what is wrong")
    failed = "; ".join(str(c) for c in result.checks if not c.passed)
    return f"the backward is not the gradient of this forward pass either ({failed})"
