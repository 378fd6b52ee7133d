"""Why an output is wrong: known failure patterns, each tested numerically.

Every hypothesis rebuilds what the output *would* be under one known bug (dy not dilated for
stride > 1, kernel not rotated, padding cropped with ``-0`` or at the wrong offset, channel axes
swapped, bias summed over the wrong axes, a forward that flips the kernel, ...) from the same
x, w, b and dy, with npconv's own ops, and reports the bug only when the user's output matches
that rebuilt value. Nothing here is guessed from shapes alone except the empty ``-0`` crop,
whose shape is its signature.

`TAG_HINTS` are the typical causes of a failure that occurs exactly on the configurations with
one feature ("every configuration with padding 0 fails"); reports print them as hints, apart
from the tested diagnoses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import npconv
from npconv.testing.compare import KIND, Tolerance
from npconv.testing.layout import Layout, axis_nouns


@dataclass(frozen=True)
class Context:
    """Everything a hypothesis may use: the case and its canonical inputs and outputs."""

    case: Any                         # a `Case` or a `PoolCase`
    layout: Layout
    tol: Tolerance
    x: np.ndarray                     # (N, *S, C)
    w: Any                            # conv: (*K, C/G, F) (transposed (*K, F/G, C)); pool: None
    b: np.ndarray | None              # (F,), None when the user's code took no bias
    dy: np.ndarray                    # (N, *P, F)
    expected: dict                    # canonical y, dx (dw, db)

    @property
    def conv_kwargs(self) -> dict:
        c = self.case
        return {"stride": c.stride, "padding": c.pads, "dilation": c.dilation,
                "groups": c.groups}

    @property
    def plain_conv(self) -> bool:
        """A forward convolution with zero padding: what most hypotheses below model."""
        c = self.case
        return c.kind == "conv" and not c.transposed and c.padding_mode == "zeros"

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, **changes) -> np.ndarray:
        """The case's forward op (conv or conv_transpose, its padding mode) on other data."""
        c = self.case
        kwargs = {**self.conv_kwargs, **changes}
        if c.transposed:
            return npconv.conv_transpose(x, w, b, output_padding=c.output_padding or 0,
                                         **kwargs)
        return npconv.conv(x, w, b, padding_mode=c.padding_mode, **kwargs)

    def matches(self, got, candidate, name: str) -> bool:
        """`got` equals the candidate and the candidate is not the right answer."""
        return (got is not None and candidate is not None and got.shape == candidate.shape
                and self.tol.close(got, candidate)
                and not self.tol.close(candidate, self.expected[name]))

    def labels(self, name: str) -> tuple[str, ...]:
        """Axis names of output `name` in the user's layout."""
        kind, rank = KIND[name], self.case.rank
        return self.layout.labels(kind, rank, "F" if name == "y" and self.case.kind == "conv"
                                  else "C", transposed=self.case.transposed)


Hypothesis = Callable[[Context, str, object, "np.ndarray | None"], "str | None"]
_REGISTRY: list[tuple[str, tuple[str, ...], tuple[str, ...], Hypothesis]] = []


def hypothesis(key: str, outputs: tuple[str, ...], kinds: tuple[str, ...] = ("conv",)):
    """Register `fn(ctx, name, raw, got) -> message or None` for `outputs` of `kinds`."""
    def register(fn: Hypothesis) -> Hypothesis:
        _REGISTRY.append((key, outputs, kinds, fn))
        return fn
    return register


def diagnose(ctx: Context, name: str, raw, got) -> list[tuple[str, str]]:
    """[(key, explanation)] of every registered hypothesis that explains output `name`.

    `raw` is what the user's code returned (user layout), `got` its canonical form or None
    when the shape is wrong.
    """
    found = []
    for key, outputs, kinds, fn in _REGISTRY:
        if name in outputs and ctx.case.kind in kinds:
            try:
                message = fn(ctx, name, raw, got)
            except ValueError:                  # the bug's geometry is impossible here
                message = None
            if message:
                found.append((key, message))
    keys = {key for key, _ in found}
    if keys & _SPECIFIC:
        found = [(k, m) for k, m in found if k not in ("shifted", "scaled")]
    return found


_SPECIFIC = {"crop-offset", "ceil-windows-dropped", "max-zero-padding", "avg-divisor",
             "avg-divisor-full", "avg-not-divided"}
"""Hypotheses that say more than a generic one ("scaled", "shifted") that matches too."""


def grad_input(dy: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...], **kwargs) -> np.ndarray:
    """dx of `npconv.conv` for an input of `x_shape` (which dx does not depend on)."""
    return npconv.conv_backward(dy, np.zeros(x_shape), w, bias=False, **kwargs).dx


def grad_weight(dy: np.ndarray, x: np.ndarray, w_shape: tuple[int, ...], **kwargs) -> np.ndarray:
    """dw of `npconv.conv` for a weight of `w_shape` (which dw does not depend on)."""
    return npconv.conv_backward(dy, x, np.zeros(w_shape), bias=False, **kwargs).dw


def _flip(w: np.ndarray, rank: int) -> np.ndarray:
    """w (*K, C/G, F) rotated 180 degrees in every spatial axis."""
    return w[(slice(None, None, -1),) * rank]


def _padded_dx(ctx: Context) -> np.ndarray:
    """The input gradient before cropping the padding: (N, *Sp, C)."""
    c = ctx.case
    shape = (c.batch, *c.padded_size, c.in_channels)
    return grad_input(ctx.dy, ctx.w, shape, stride=c.stride, dilation=c.dilation,
                      groups=c.groups)


def _crop(a: np.ndarray, starts, sizes) -> np.ndarray:
    return a[(slice(None), *(slice(o, o + s) for o, s in zip(starts, sizes)))]


# ---------------------------------------------------------------------------------------------
# Shapes and layouts
# ---------------------------------------------------------------------------------------------


@hypothesis("crop-minus-zero", ("dx",))
def _crop_minus_zero(ctx: Context, name: str, raw, got):
    shape = np.shape(raw) if isinstance(raw, np.ndarray) else ()
    if got is not None or 0 not in shape or not any(hi == 0 for _, hi in ctx.case.pads):
        return None
    return (f"{name} is empty (shape {tuple(shape)}): padding cropped with `-0`. "
            f"`dxp[:, p:-p]` has no elements when p == 0 (the slice 0:-0 is empty); crop with "
            f"`dxp[:, p:p + H]` (or `dxp[:, lo:dxp.shape[1] - hi]`) instead")


@hypothesis("padding-not-cropped", ("dx",))
def _not_cropped(ctx: Context, name: str, raw, got):
    if got is not None or not isinstance(raw, np.ndarray) or not ctx.plain_conv or \
            not any(lo or hi for lo, hi in ctx.case.pads):
        return None
    padded = ctx.layout.to_user("x", _padded_dx(ctx))
    if np.shape(raw) != padded.shape or not ctx.tol.close(raw, padded):
        return None
    return (f"{name} still includes the padding: it is the gradient of the padded input, "
            f"shape {padded.shape}; crop `lo` rows at the start and `hi` at the end of every "
            f"spatial axis")


@hypothesis("crop-offset", ("dx",))
def _crop_offset(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is None or not ctx.plain_conv:
        return None
    dxp = _padded_dx(ctx)
    right = tuple(lo for lo, _ in c.pads)
    options = [sorted({0, lo, hi, lo + hi}) for lo, hi in c.pads]
    for starts in itertools.product(*options):
        if starts != right and ctx.matches(got, _crop(dxp, starts, c.in_size), name):
            return (f"{name} is the gradient of the padded input read from the wrong place: "
                    f"it starts at {starts} instead of lo = {right}, so the padding of dy and "
                    f"the crop of dx disagree{_kernel_note(c)}; dx must be dxp[lo:lo + S] on "
                    f"every axis")
    return None


def _kernel_note(case) -> str:
    if len(set(case.kernel_size)) == 1:
        return ""
    k = " and ".join(f"k{n[0]} - 1" for n in ("h", "w")) if case.rank == 2 else "K - 1"
    return f" (with a non-square kernel, dy is padded by {k} on the respective axes)"


@hypothesis("axes-permuted", ("y", "dx", "dw"), ("conv", "pool"))
def _axes_permuted(ctx: Context, name: str, raw, got):
    kind, expected = KIND[name], ctx.expected[name]
    if not isinstance(raw, np.ndarray) or raw.ndim != expected.ndim:
        return None
    want = ctx.layout.to_user(kind, expected)
    labels = ctx.labels(name)
    raw = np.asarray(raw, dtype=float)
    for perm in itertools.permutations(range(raw.ndim)):
        if perm == tuple(range(raw.ndim)) or raw.transpose(perm).shape != want.shape:
            continue
        if ctx.tol.close(raw.transpose(perm), want):
            got_labels = [""] * raw.ndim
            for i, p in enumerate(perm):
                got_labels[p] = labels[i]
            return (f"{name} has the right values with its axes in the wrong order: it is "
                    f"({', '.join(got_labels)}) where ({', '.join(labels)}) is expected "
                    f"({_swap_note(got_labels, labels)}); transpose it")
    return None


def _swap_note(got: list[str], want: tuple[str, ...]) -> str:
    moved = [w for g, w in zip(got, want) if g != w]
    if sorted(moved) == ["C", "F"]:
        return "the in- and out-channel axes C and F are swapped"
    channel = want[-1] if want[0] == "N" and want[-1] in ("C", "F") else want[1]
    if want[0] == "N" and got.index(channel) != want.index(channel):
        return "channels_first and channels_last mixed up"
    return f"axes {', '.join(moved)} moved"


# ---------------------------------------------------------------------------------------------
# Values: the input gradient
# ---------------------------------------------------------------------------------------------


@hypothesis("dy-not-dilated", ("dx",))
def _dy_not_dilated(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is None or max(c.stride) == 1 or not ctx.plain_conv:
        return None
    full = tuple(p + d * (k - 1) for p, k, d in zip(c.out_size, c.kernel_size, c.dilation))
    dxf = grad_input(ctx.dy, ctx.w, (c.batch, *full, c.in_channels),
                     dilation=c.dilation, groups=c.groups)              # stride 1: (N, *E, C)
    dxp = np.zeros((c.batch, *c.padded_size, c.in_channels))            # (N, *Sp, C)
    fit = tuple(slice(0, min(e, s)) for e, s in zip(full, c.padded_size))
    dxp[(slice(None), *fit)] = dxf[(slice(None), *fit)]
    if not ctx.matches(got, _crop(dxp, [lo for lo, _ in c.pads], c.in_size), name):
        return None
    return (f"dy was not dilated for stride {c.stride_arg}: {name} equals the stride-1 "
            f"transposed convolution of dy. Insert stride - 1 zeros between the rows and "
            f"columns of dy before correlating it with the rotated kernel (or add dy[p] into "
            f"dxp[p * stride + k] for every kernel offset k)")


@hypothesis("kernel-not-rotated", ("dx",))
def _kernel_not_rotated(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is None or c.transposed:
        return None
    candidate = grad_input(ctx.dy, _flip(ctx.w, c.rank), c.x_shape, **ctx.conv_kwargs,
                           padding_mode=c.padding_mode)
    if not ctx.matches(got, candidate, name):
        return None
    return (f"the kernel was not rotated: {name} equals the correlation of the padded, "
            f"dilated dy with w as it is. Written as a correlation of dy, the input gradient "
            f"needs w rotated by 180 degrees (w[::-1, ::-1] on the kernel axes)")


# ---------------------------------------------------------------------------------------------
# Values: the forward pass, the weight and bias gradients
# ---------------------------------------------------------------------------------------------


@hypothesis("forward-flips-kernel", ("y",))
def _forward_flips(ctx: Context, name: str, raw, got):
    candidate = ctx.forward(ctx.x, _flip(ctx.w, ctx.case.rank), ctx.b)
    if not ctx.matches(got, candidate, name):
        return None
    if ctx.case.transposed:
        return ("y is computed with the kernel rotated by 180 degrees: a transposed "
                "convolution (PyTorch's ConvTranspose, npconv.conv_transpose) scatters each x "
                "pixel times w as it is, being the gradient of a cross-correlation")
    return ("y is a true convolution (the kernel rotated by 180 degrees), but conv layers "
            "(npconv, PyTorch, Keras, the seed) compute a cross-correlation: use w unflipped "
            "in the forward pass")


@hypothesis("bias-not-added", ("y",))
def _bias_missing(ctx: Context, name: str, raw, got):
    if ctx.b is None or not ctx.b.any():
        return None
    if not ctx.matches(got, ctx.forward(ctx.x, ctx.w, None), name):
        return None
    return "y lacks the bias: add b to every output position (broadcast over the channel axis)"


@hypothesis("dw-rotated", ("dw",))
def _dw_rotated(ctx: Context, name: str, raw, got):
    if not ctx.matches(got, _flip(ctx.expected["dw"], ctx.case.rank), name):
        return None
    return ("dw is rotated by 180 degrees: its kernel taps are in reverse order (a flipped "
            "kernel or a flipped window where none belongs)")


@hypothesis("dw-windows-stride-1", ("dw",))
def _dw_stride_one(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is None or max(c.stride) == 1 or not ctx.plain_conv:
        return None
    xp = np.pad(ctx.x, ((0, 0), *c.pads, (0, 0)))                       # (N, *Sp, C)
    span = tuple(p + d * (k - 1) for p, k, d in zip(c.out_size, c.kernel_size, c.dilation))
    candidate = grad_weight(ctx.dy, _crop(xp, [0] * c.rank, span), c.w_shape,
                            dilation=c.dilation, groups=c.groups)
    if not ctx.matches(got, candidate, name):
        return None
    return (f"dw is built from windows of x that step by 1 instead of the stride "
            f"{c.stride_arg}: take the windows at p * stride, as the forward pass does")


@hypothesis("bias-wrong-axes", ("db",))
def _bias_axes(ctx: Context, name: str, raw, got):
    if not isinstance(raw, np.ndarray) or (got is not None and
                                           ctx.tol.close(got, ctx.expected["db"])):
        return None
    dy = ctx.layout.to_user("x", ctx.dy)
    labels = ctx.layout.labels("x", ctx.case.rank, "F")
    right = tuple(i for i, lab in enumerate(labels) if lab != "F")
    raw = np.squeeze(np.asarray(raw, dtype=float))
    channel = labels.index("F")
    sets = [a for r in range(dy.ndim, 0, -1) for a in itertools.combinations(range(dy.ndim), r)]
    sets.sort(key=lambda a: channel in a)     # with size-1 axes several sets match: the most
    for axes, op in itertools.product(sets, ("sum", "mean")):   # axes, not the channel, first
        candidate = np.squeeze(getattr(dy, op)(axis=axes))
        if (axes, op) != (right, "sum") and candidate.shape == raw.shape and \
                ctx.tol.close(raw, candidate):
            over = ", ".join(labels[i] for i in axes)
            want = ", ".join(labels[i] for i in right)
            return (f"db is dy {'summed' if op == 'sum' else 'averaged'} over ({over}); "
                    f"it must be summed over every axis but the channel axis: ({want})")
    return None


# ---------------------------------------------------------------------------------------------
# Padding modes and transposed convolutions
# ---------------------------------------------------------------------------------------------

NUMPY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}
_MODE_WORDS = {"constant": "zeros", "reflect": "mirrored without repeating the edge pixel",
               "symmetric": "mirrored with the edge pixel repeated",
               "edge": "the edge pixel repeated", "wrap": "wrapped around"}


def pad_adjoint(dxp: np.ndarray, case, numpy_mode: str) -> np.ndarray:
    """The gradient of ``np.pad(x, case.pads, mode=numpy_mode)`` given the padded one: every
    padded position's gradient added to the input pixel it copies. (N, *Sp, C) -> (N, *S, C)."""
    size = case.in_size
    source = np.arange(int(np.prod(size))).reshape(size)               # (*S)
    mode: Any = numpy_mode                      # (np.pad's stubs list the modes as literals)
    index = (np.pad(source, case.pads, constant_values=-1) if numpy_mode == "constant" else
             np.pad(source, case.pads, mode=mode)).ravel()               # (prod(Sp),)
    keep = index >= 0
    dx = np.zeros((dxp.shape[0], int(np.prod(size)), dxp.shape[-1]))   # (N, prod(S), C)
    flat = dxp.reshape(dxp.shape[0], -1, dxp.shape[-1])                # (N, prod(Sp), C)
    np.add.at(dx, (slice(None), index[keep]), flat[:, keep])  # type: ignore[arg-type]
    return dx.reshape(dxp.shape[0], *size, dxp.shape[-1])              # (N, *S, C)


def _other_modes(ctx: Context):
    c = ctx.case
    if c.kind != "conv" or c.transposed or not any(map(any, c.pads)):
        return []
    right = NUMPY_MODES[c.padding_mode]
    return [m for m in ("constant", "reflect", "symmetric", "edge", "wrap") if m != right]


def _mode_message(ctx: Context, name: str, mode: str) -> str:
    right = NUMPY_MODES[ctx.case.padding_mode]
    return (f"{name} is computed on x padded like np.pad(mode={mode!r}) ({_MODE_WORDS[mode]}), "
            f"but padding_mode={ctx.case.padding_mode!r} pads like np.pad(mode={right!r}) "
            f"({_MODE_WORDS[right]})")


@hypothesis("padding-mode-confused", ("y", "dx"))
def _mode_confused(ctx: Context, name: str, raw, got):
    c = ctx.case
    kw = {"stride": c.stride, "dilation": c.dilation, "groups": c.groups}
    for mode in _other_modes(ctx) if got is not None else ():
        if name == "dx" and mode == "constant":
            continue                              # `padding-gradient-dropped` says it
        xp = np.pad(ctx.x, ((0, 0), *c.pads, (0, 0)), mode=mode)            # (N, *Sp, C)
        if name == "y":
            candidate = npconv.conv(xp, ctx.w, ctx.b, **kw)                  # (N, *P, F)
        else:
            dxp = grad_input(ctx.dy, ctx.w, xp.shape, **kw)                  # (N, *Sp, C)
            candidate = pad_adjoint(dxp, c, mode)                            # (N, *S, C)
        if ctx.matches(got, candidate, name):
            return _mode_message(ctx, name, mode)
    return None


@hypothesis("padding-gradient-dropped", ("dx",))
def _mode_gradient_dropped(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is None or c.transposed or c.padding_mode == "zeros":
        return None
    candidate = grad_input(ctx.dy, ctx.w, c.x_shape, **ctx.conv_kwargs)
    if not ctx.matches(got, candidate, name):
        return None
    return (f"dx misses the gradient that flows through the padding: with "
            f"padding_mode={c.padding_mode!r} every padded position copies an input pixel, "
            f"whose gradient must receive it too; dx is the padded gradient cropped, as for "
            f"zero padding")


@hypothesis("transposed-not-cropped", ("y",))
def _transposed_not_cropped(ctx: Context, name: str, raw, got):
    c = ctx.case
    if not c.transposed or got is not None or not isinstance(raw, np.ndarray) or \
            not any(map(any, c.pads)):
        return None
    full = ctx.layout.to_user("x", ctx.forward(ctx.x, ctx.w, ctx.b, padding=0))
    if raw.shape != full.shape or not ctx.tol.close(raw, full):
        return None
    return (f"y still includes the rows that `padding` removes: a transposed convolution "
            f"crops lo rows at the start and hi at the end of every axis of its full output "
            f"(shape {full.shape} here)")


@hypothesis("output-padding-ignored", ("y",))
def _output_padding_ignored(ctx: Context, name: str, raw, got):
    c = ctx.case
    if not c.transposed or not any(c.output_padding) or got is not None or \
            not isinstance(raw, np.ndarray):
        return None
    short = ctx.layout.to_user("x", npconv.conv_transpose(
        ctx.x, ctx.w, ctx.b, output_padding=0, **ctx.conv_kwargs))
    if raw.shape != short.shape or not ctx.tol.close(raw, short):
        return None
    return (f"output_padding={c.output_padding_arg} was ignored: y is the output without the "
            f"extra rows at the end of each axis that output_padding adds")


# ---------------------------------------------------------------------------------------------
# Generic: zeros, scale, shift
# ---------------------------------------------------------------------------------------------


@hypothesis("all-zeros", ("y", "dx", "dw", "db"), ("conv", "pool"))
def _zeros(ctx: Context, name: str, raw, got):
    if got is None or got.any() or not ctx.expected[name].any():
        return None
    return f"{name} is all zeros: nothing was written or accumulated into it"


@hypothesis("scaled", ("y", "dx", "dw", "db"), ("conv", "pool"))
def _scaled(ctx: Context, name: str, raw, got):
    e = ctx.expected[name]
    if got is None or not got.any() or not e.any():
        return None
    factor = float(np.vdot(got, e) / np.vdot(e, e))
    if not ctx.matches(got, factor * e, name):
        return None
    for value, text in _known_factors(ctx):
        if value != 1 and abs(factor - value) <= 1e-6 * abs(value):
            return f"{name} is the right answer {text}"
    return f"{name} is the right answer scaled by {factor:.6g}"


def _known_factors(ctx: Context) -> list[tuple[float, str]]:
    c = ctx.case
    factors = [(-1.0, "with the wrong sign")]
    if c.kind == "pool":
        k = int(np.prod(c.kernel_size))
        return [*factors, (float(k), f"multiplied by the window size {k} (dy not divided by "
                                     f"it)"),
                (1 / k, f"divided by the window size {k} once more")]
    n, positions = c.batch, int(np.prod(c.out_size))
    return [(1 / n, f"divided by the batch size N={n} (a mean over the batch instead of a "
                    f"sum)"), *factors,
            (1 / positions, "divided by the number of output positions (a mean instead of a "
                            "sum)"), (float(n), f"multiplied by the batch size N={n}")]


@hypothesis("shifted", ("y", "dx", "dw"), ("conv", "pool"))
def _shifted(ctx: Context, name: str, raw, got):
    if got is None:
        return None
    e = ctx.expected[name]
    spatial = tuple(range(ctx.case.rank)) if name == "dw" else tuple(
        range(1, ctx.case.rank + 1))
    for shift in itertools.product((-1, 1, -2, 2, 0), repeat=len(spatial)):
        if any(shift) and _agrees_shifted(ctx, got, e, spatial, shift):
            return (f"{name} is the right answer shifted {_shift_words(shift, name)}: an "
                    f"off-by-one in padding or cropping, such as padding by one axis's kernel "
                    f"size on every axis")
    return None


def _agrees_shifted(ctx: Context, got, e, spatial, shift) -> bool:
    sl_got, sl_e = [slice(None)] * got.ndim, [slice(None)] * got.ndim
    for axis, s in zip(spatial, shift):
        n = got.shape[axis]
        if n - abs(s) < max(2, (n + 1) // 2):
            return False
        sl_got[axis] = slice(max(s, 0), n + min(s, 0))
        sl_e[axis] = slice(max(-s, 0), n + min(-s, 0))
    a, b = got[tuple(sl_got)], e[tuple(sl_e)]
    return bool(np.abs(b).max(initial=0) > 0 and ctx.tol.close(a, b))


def _shift_words(shift, name: str) -> str:
    """(1, -2) -> "down by 1 row and left by 2 columns"."""
    nouns = axis_nouns(len(shift))
    ways = {"row": ("down", "up"), "column": ("right", "left")}
    words = []
    for s, noun in zip(shift, nouns):
        if s:
            way = ways.get(noun, ("forward", "back"))[s < 0]
            kernel = "kernel " if name == "dw" else ""
            words.append(f"{way} by {abs(s)} {kernel}{noun}{'s' if abs(s) > 1 else ''}")
    return " and ".join(words)


# ---------------------------------------------------------------------------------------------
# Across configurations: typical causes of a failure tied to one feature
# ---------------------------------------------------------------------------------------------

TAG_HINTS = {
    "padding 0": "code that needs padding > 0, typically a crop `a[p:-p]`, which is empty "
                 "when p == 0",
    "padding > 0": "the padding in the backward pass: dx is the gradient of the padded input "
                   "with lo rows cropped at the start and hi rows at the end of every axis",
    "stride > 1": "the stride in the backward pass: dy must be dilated (stride - 1 zeros "
                  "between rows and columns) or scattered at stride steps",
    "remainder": "the rows after the last window, (S + lo + hi - dilated K) % stride of them: "
                 "the forward never reads them, so their gradient is 0, and a dilated dy needs "
                 "that many extra zero rows at the end",
    "non-square kernel": "one axis's kernel size used for both axes (e.g. dy padded by fw - 1 "
                         "on every axis)",
    "non-square input": "one axis's size used for both axes (e.g. a remainder or an output "
                        "size computed from the height only)",
    "per-axis stride": "one stride value used for every axis",
    "per-axis padding": "one padding value used for every axis",
    "asymmetric padding": "padding assumed equal on both sides of an axis (lo == hi)",
    "even kernel": "a centre or 'same' formula that assumes an odd kernel (K // 2)",
    "1x1 kernel": "a K - 1 == 0 special case, e.g. a crop `a[:-(K - 1)]`, empty when K == 1",
    "output size 1": "a squeeze() or reshape that drops output axes of size 1",
    "padding > kernel // 2": "padding wider than the kernel's half-width: part of the padded "
                             "gradient lies outside the input and must be cropped",
    "dilation": "dilation in the backward pass: kernel taps are `dilation` apart in both "
                "gradients",
    "groups": "channel groups: filter f sees only the C/G channels of its group, and dw is "
              "(*K, C/G, F)",
    "output padding": "output_padding: the extra rows at the end of each axis of a transposed "
                      "convolution's output (zero before the bias is added)",
    "non-square output": "one axis's output size used for both axes (e.g. dy reshaped or "
                         "padded with the height's size on the width)",
    "reflect padding": "the gradient of the padding: every mirrored position sends its "
                       "gradient back to the pixel it copies",
    "replicate padding": "the gradient of the padding: every repeated edge position sends its "
                         "gradient back to the edge pixel",
    "circular padding": "the gradient of the padding: every wrapped position sends its "
                        "gradient back to the pixel on the other side",
    "batch 1": "a squeeze() or reshape that drops the batch axis when N == 1",
    "batch > 1": "the batch axis: a reshape that mixes images, or a sum or index that takes "
                 "only the first image",
    "one channel": "a squeeze() that drops a channel axis of size 1",
}
