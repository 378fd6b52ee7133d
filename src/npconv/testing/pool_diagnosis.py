"""Why a pooling output is wrong: the known pooling bugs, each rebuilt and tested numerically.

Like `diagnosis` for convolutions: every hypothesis computes what y or dx would be under one
bug seen in hand-written max/average pooling, from the same x and dy, and reports the bug only
when the user's output equals it:

- max: the gradient routed to every tied maximum, or to the last one (PyTorch and npconv route
  it to the first); padding with zeros instead of -inf;
- average: the divisor with or without the padding (count_include_pad), the full window size
  even past the padding, dy spread without dividing;
- both: overlapping windows whose gradients overwrite each other (``=`` where ``+=`` or
  ``np.add.at`` is needed), the partial windows of ceil_mode dropped, the reshape trick (y
  pooled over k-blocks, dx of the shape np.repeat of dy gives), right only at stride == kernel.

The bug models gather each window's taps from the input with index arrays and send gradients
back with one ``np.add.at`` per kernel offset (`Windows`).
"""

from __future__ import annotations

from typing import cast

import numpy as np

import npconv
from npconv.testing.diagnosis import Context, hypothesis
from npconv.testing.pool_cases import Windows


def pool_forward(case, x: np.ndarray, **changes) -> np.ndarray:
    """npconv's max_pool / avg_pool of x (N, *S, C) for `case`, some arguments changed."""
    kw = {"stride": case.stride, "padding": case.pads, "ceil_mode": case.ceil_mode, **changes}
    if case.op == "max":
        return cast(np.ndarray, npconv.max_pool(x, case.kernel_size, dilation=case.dilation,
                                                **kw))
    kw.setdefault("count_include_pad", case.count_include_pad)
    return npconv.avg_pool(x, case.kernel_size, **kw)


def pool_backward(case, dy: np.ndarray, x: np.ndarray, **changes) -> np.ndarray:
    """npconv's max_pool_backward / avg_pool_backward for `case`, some arguments changed."""
    kw = {"stride": case.stride, "padding": case.pads, "ceil_mode": case.ceil_mode, **changes}
    if case.op == "max":
        return npconv.max_pool_backward(dy, x, case.kernel_size, dilation=case.dilation, **kw)
    kw.setdefault("count_include_pad", case.count_include_pad)
    return npconv.avg_pool_backward(dy, x.shape, case.kernel_size, **kw)


def _dy_cols(dy: np.ndarray) -> np.ndarray:
    """dy (N, *P, C) as (N, nP, 1, C), to broadcast over a window's taps."""
    return dy.reshape(dy.shape[0], -1, 1, dy.shape[-1])


def _max_routing(case, x, dy, pick: str) -> np.ndarray:
    """dx of max pooling with the gradient sent to the "all", "first" or "last" maximum."""
    win = Windows.of(case)
    cols = win.gather(x, -np.inf)                                        # (N, nP, nK, C)
    top = cols.max(axis=2, keepdims=True)                                # (N, nP, 1, C)
    hit = cols == top
    if pick != "all":
        n_k = cols.shape[2]
        index = np.argmax(hit, axis=2) if pick == "first" else \
            n_k - 1 - np.argmax(hit[:, :, ::-1], axis=2)                 # (N, nP, C)
        hit = np.arange(n_k)[None, None, :, None] == index[:, :, None, :]
    return win.scatter(hit * _dy_cols(dy), x.shape)


def _ties_text(case) -> str:
    return "PyTorch and npconv send it to the first maximum in raster order"


@hypothesis("max-ties-all", ("dx",), ("pool",))
def _ties_all(ctx: Context, name: str, raw, got):
    if ctx.case.op != "max" or got is None:
        return None
    if not ctx.matches(got, _max_routing(ctx.case, ctx.x, ctx.dy, "all"), name):
        return None
    return (f"dx sends each window's gradient to every input that ties for the maximum "
            f"(a mask x == max), so tied pixels get it several times; {_ties_text(ctx.case)} "
            f"(np.argmax of the window, or break ties so that the mask has one True)")


@hypothesis("max-ties-last", ("dx",), ("pool",))
def _ties_last(ctx: Context, name: str, raw, got):
    if ctx.case.op != "max" or got is None:
        return None
    if not ctx.matches(got, _max_routing(ctx.case, ctx.x, ctx.dy, "last"), name):
        return None
    return (f"dx sends the gradient of a window with tied maxima to the last of them (a `>=` "
            f"comparison, or an argmax over a reversed window); {_ties_text(ctx.case)}")


def _assigned(case, x, dy) -> np.ndarray:
    """dx when each window writes its whole region with `=`: the last window wins a pixel."""
    win = Windows.of(case)
    if case.op == "max":
        cols = win.gather(x, -np.inf)                                    # (N, nP, nK, C)
        first = np.argmax(cols == cols.max(axis=2, keepdims=True), axis=2)
        mask = np.arange(cols.shape[2])[None, None, :, None] == first[:, :, None, :]
        contrib = mask * _dy_cols(dy)                     # (N, nP, nK, C)
    else:
        counts = (win.padded if case.count_include_pad else win.taps >= 0).sum(axis=1)
        contrib = np.broadcast_to(_dy_cols(dy) / counts[None, :, None, None],
                                  (dy.shape[0], *win.taps.shape, dy.shape[-1]))
    last = win.last_writer()
    dx = np.zeros((x.shape[0], win.in_count, x.shape[-1]))              # (N, prod(S), C)
    order = np.arange(win.taps.shape[0])
    for k in range(win.taps.shape[1]):
        ok = (win.taps[:, k] >= 0)
        ok[ok] = last[win.taps[ok, k]] == order[ok]
        dx[:, win.taps[ok, k]] = contrib[:, ok, k]
    return dx.reshape(x.shape)


def _assigned_at_argmax(case, x, dy) -> np.ndarray:
    """dx of max pooling written with `dx[argmax] = dy`: a pixel that is the maximum of several
    windows keeps only the last one's gradient."""
    win = Windows.of(case)
    cols = win.gather(x, -np.inf)                                        # (N, nP, nK, C)
    first = np.argmax(cols == cols.max(axis=2, keepdims=True), axis=2)  # (N, nP, C)
    pixel = np.take_along_axis(np.broadcast_to(win.taps[None, :, :, None], cols.shape),
                               first[:, :, None, :], axis=2)[:, :, 0]    # (N, nP, C)
    n, n_p, c = pixel.shape
    key = (np.arange(n)[:, None, None] * win.in_count + pixel) * c + np.arange(c)  # (N, nP, C)
    last = np.full(n * win.in_count * c, -1)
    np.maximum.at(last, key.ravel(), np.broadcast_to(np.arange(n_p)[None, :, None],
                                                     key.shape).ravel())
    flat_dy = dy.reshape(n, n_p, c)
    winner = last.reshape(n, win.in_count, c)                            # (N, prod(S), C)
    dx = np.where(winner >= 0, np.take_along_axis(flat_dy, np.maximum(winner, 0), axis=1), 0.0)
    return dx.reshape(x.shape)


@hypothesis("overlap-assigned", ("dx",), ("pool",))
def _overlap_assigned(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is None or all(s >= k for s, k in zip(c.stride, c.effective_kernel)):
        return None
    if ctx.matches(got, _assigned(c, ctx.x, ctx.dy), name):
        how = "each window's region of dx is assigned (`dx[window] = ...`)"
    elif c.op == "max" and ctx.matches(got, _assigned_at_argmax(c, ctx.x, ctx.dy), name):
        how = "dx[argmax] = dy with fancy indexing keeps one value per repeated index"
    else:
        return None
    return (f"overlapping windows overwrite each other's gradient: {how}, so where windows "
            f"overlap only the last one counts; add instead (`dx[window] += ...`, or "
            f"np.add.at(dx, index, values) for fancy indices)")


def _divisor_text(include: bool) -> str:
    return ("the taps inside the padded input (count_include_pad=True, PyTorch's default)"
            if include else "the taps inside the input only (count_include_pad=False, Keras' "
                            "'same' pooling)")


@hypothesis("avg-divisor", ("y", "dx"), ("pool",))
def _avg_divisor(ctx: Context, name: str, raw, got):
    c = ctx.case
    if c.op != "avg" or got is None:
        return None
    other = not c.count_include_pad
    candidate = pool_forward(c, ctx.x, count_include_pad=other) if name == "y" else \
        pool_backward(c, ctx.dy, ctx.x, count_include_pad=other)
    if not ctx.matches(got, candidate, name):
        return None
    flag = "--count-include-pad" if other else "--no-count-include-pad"
    return (f"{name} divides each window by {_divisor_text(other)}, but the check expects "
            f"{_divisor_text(c.count_include_pad)}; if your layer means the other "
            f"convention, check it with {flag} (count_include_pad={other})")


@hypothesis("avg-divisor-full", ("y", "dx"), ("pool",))
def _avg_full_window(ctx: Context, name: str, raw, got):
    c = ctx.case
    if c.op != "avg" or got is None:
        return None
    win, k = Windows.of(c), int(np.prod(c.kernel_size))
    other = {"count_include_pad": not c.count_include_pad}
    flipped = pool_forward(c, ctx.x, **other) if name == "y" else \
        pool_backward(c, ctx.dy, ctx.x, **other)
    if name == "y":
        cols = win.gather(ctx.x, 0.0)                                    # (N, nP, nK, C)
        candidate = (cols.sum(axis=2) / k).reshape(ctx.expected["y"].shape)
    else:
        contrib = np.broadcast_to(_dy_cols(ctx.dy) / k,
                                  (ctx.dy.shape[0], *win.taps.shape, ctx.dy.shape[-1]))
        candidate = win.scatter(contrib, ctx.x.shape)
    if not ctx.matches(got, candidate, name) or ctx.tol.close(candidate, flipped):
        return None                               # (the other divisor: `avg-divisor` says it)
    return (f"{name} divides every window by its full size {k}, also where it covers padding "
            f"or runs past the input (ceil_mode); PyTorch divides by "
            f"{_divisor_text(c.count_include_pad)}, never counting taps past the padding")


@hypothesis("avg-not-divided", ("dx",), ("pool",))
def _avg_not_divided(ctx: Context, name: str, raw, got):
    c = ctx.case
    if c.op != "avg" or got is None:
        return None
    win = Windows.of(c)
    contrib = np.broadcast_to(_dy_cols(ctx.dy), (ctx.dy.shape[0], *win.taps.shape,
                                                    ctx.dy.shape[-1]))
    if not ctx.matches(got, win.scatter(contrib, ctx.x.shape), name):
        return None
    return ("dx spreads dy over each window without dividing it by the window's divisor: the "
            "gradient of a mean is dy / count for every tap")


@hypothesis("max-zero-padding", ("y", "dx"), ("pool",))
def _max_zero_padding(ctx: Context, name: str, raw, got):
    c = ctx.case
    if c.op != "max" or got is None or not (any(map(any, c.pads)) or c.ceil_mode):
        return None
    win = Windows.of(c)
    cols = win.gather(ctx.x, 0.0)                                        # (N, nP, nK, C)
    if name == "y":
        candidate = cols.max(axis=2).reshape(ctx.expected["y"].shape)
    else:
        first = np.argmax(cols == cols.max(axis=2, keepdims=True), axis=2)
        hit = np.arange(cols.shape[2])[None, None, :, None] == first[:, :, None, :]
        candidate = win.scatter(hit * _dy_cols(ctx.dy), ctx.x.shape)
    if not ctx.matches(got, candidate, name):
        return None
    return (f"max pooling padded with zeros instead of -inf: where all the inputs of a window "
            f"are negative, the padding's 0 wins, so {name} is wrong there (y should be the "
            f"largest input, and its gradient should go to that input, not to the padding)")


@hypothesis("ceil-windows-dropped", ("y", "dx"), ("pool",))
def _ceil_dropped(ctx: Context, name: str, raw, got):
    c = ctx.case
    floor = c.floor_size
    if not c.ceil_mode or floor == c.out_size:
        return None
    if name == "y":
        if got is not None or not isinstance(raw, np.ndarray):
            return None
        candidate = ctx.layout.to_user("x", pool_forward(c, ctx.x, ceil_mode=False))
        if raw.shape != candidate.shape or not ctx.tol.close(raw, candidate):
            return None
    else:
        dy = ctx.dy[(slice(None), *(slice(0, f) for f in floor))]       # (N, *floor, C)
        if not ctx.matches(got, pool_backward(c, dy, ctx.x, ceil_mode=False), name):
            return None
    return (f"the partial windows at the end that ceil_mode=True adds are dropped: {name} is "
            f"what ceil_mode=False gives{' for the other windows' if name == 'dx' else ''} "
            f"(output size {floor} instead of {c.out_size}); with ceil_mode the last window "
            f"may run past the input, whose missing taps are ignored")


def _tiled(x: np.ndarray, case) -> np.ndarray:
    """y of the reshape trick: x (N, *S, C) cut to whole k-blocks, reshaped to (N, S0/k0, k0,
    ..., C) and reduced over the k axes: pooling at stride == kernel size, without padding."""
    k, tiles = case.kernel_size, [s // kk for s, kk in zip(x.shape[1:-1], case.kernel_size)]
    blocks = x[(slice(None), *(slice(0, t * kk) for t, kk in zip(tiles, k)))]   # (N, *T*K, C)
    blocks = blocks.reshape(x.shape[0], *(v for t, kk in zip(tiles, k) for v in (t, kk)),
                            x.shape[-1])                                  # (N, T0, K0, ..., C)
    axes = tuple(range(2, 2 * len(k) + 1, 2))
    return blocks.max(axis=axes) if case.op == "max" else blocks.mean(axis=axes)  # (N, *T, C)


@hypothesis("stride-is-kernel", ("y", "dx"), ("pool",))
def _stride_is_kernel(ctx: Context, name: str, raw, got):
    c = ctx.case
    if got is not None or not isinstance(raw, np.ndarray) or c.stride == c.kernel_size:
        return None
    spatial = ctx.layout.perm("x", c.rank)
    tiles = tuple(s // k for s, k in zip(c.in_size, c.kernel_size))
    shapes = {"y": (c.batch, *tiles, c.channels),
              "dx": (c.batch, *(p * k for p, k in zip(c.out_size, c.kernel_size)), c.channels)}
    want = tuple(shapes[name][i] for i in spatial)
    if raw.shape != want or raw.shape == ctx.layout.to_user("x", ctx.expected[name]).shape:
        return None
    if name == "y" and not ctx.tol.close(raw, ctx.layout.to_user("x", _tiled(ctx.x, c))):
        return None                               # the shape alone can come from other bugs
    how = ("the reshape x.reshape(N, H // k, k, W // k, k, C).max(axis=(2, 4))" if name == "y"
           else "dy spread with np.repeat(dy, k) over k x k blocks")
    return (f"{name} has shape {raw.shape}, what windows at stride == kernel size {c.kernel_size} "
            f"give ({how}); with stride {c.stride} the windows are "
            f"{'overlapping' if min(c.stride) < min(c.kernel_size) else 'apart'}: loop over "
            f"kernel offsets or use strided windows instead")


POOL_TAG_HINTS = {
    "overlapping windows": "windows that share input pixels: each window's gradient must be "
                           "added (`+=`, np.add.at), not assigned, or the later window "
                           "overwrites the earlier one",
    "gaps between windows": "windows at `stride` apart with pixels between them that no "
                            "window reads (their gradient is 0)",
    "stride == kernel": "code that assumes something about windows that tile the input",
    "padding > 0": "the padding: max pooling pads with -inf (the padding never wins), average "
                   "pooling divides by the taps inside the padded input "
                   "(count_include_pad=True)",
    "padding 0": "code that needs padding > 0, typically a crop `a[p:-p]`, empty when p == 0",
    "ceil_mode": "ceil_mode: one more, partial window at the end when the stride leaves a "
                 "remainder; its taps past the input are ignored and not counted",
    "remainder": "the rows after the last window: no window reads them, their gradient is 0",
    "ties": "tied maxima: the gradient goes to one of them (the first, in PyTorch and npconv), "
            "not to every one",
    "padding excluded": "count_include_pad=False: the average divides by the taps inside the "
                        "input only",
    "dilation": "dilation: a window's taps are `dilation` apart",
    "non-square kernel": "one axis's kernel size used for both axes",
    "non-square input": "one axis's size used for both axes (e.g. an output size computed "
                        "from the height only)",
    "per-axis stride": "one stride used for every axis",
    "batch 1": "a squeeze() or reshape that drops the batch axis when N == 1",
    "batch > 1": "the batch axis: a reshape that mixes images, or a max over the batch",
    "one channel": "a squeeze() that drops a channel axis of size 1",
}

