"""Convolutions of dask arrays: lazy, chunk by chunk, equal to the in-memory results.

The dask front end of npconv: `conv` and `conv_backward` take dask arrays (or NumPy ones, which
are chunked like their partner) and return dask arrays; nothing runs until `.compute()`. Each
chunk is computed by the in-memory ops, so every algorithm, dtype and check carries over, and
`algorithm=` and `workspace=` reach every chunk's op. Needs dask (`pip install 'npconv[dask]'`),
imported only when an op is called.

- Batch chunks are independent: y, dx are `map_blocks` of the in-memory ops.
- Spatial chunks need a halo. The padded input is rechunked on a stride-aligned plan (`_Plan`):
  chunk j of the padded input starts at stride * q * j, so it produces exactly the q outputs
  q * j ... q * (j + 1) - 1, given `d * (K - 1) - stride + 1` extra rows after it, which
  `dask.array.overlap` copies in from the next chunk. The input gradient runs the other way: a
  padded-input chunk receives gradient from the outputs up to floor(d * (K - 1) / stride) rows
  before its own, so dy gets that halo before each chunk.
- dw and db are sums over all chunks, reduced as dask trees (`Array.sum`).

The weight and bias stay in memory (NumPy): they are small and every chunk needs them.
Spatial chunks need padding_mode="zeros"; other modes are computed with the spatial axes in one
chunk (batch chunks still apply), since their gradient wraps across the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from npconv import _args, _backend, _layout
from npconv.convolution import check_options, wants_db
from npconv.convolution import conv as _conv
from npconv.convolution import conv_grad_input as _grad_input
from npconv.convolution import conv_grad_weight as _grad_weight
from npconv.spec import (
    ConvGrads,
    ConvSpec,
    Padding,
    check_shape,
    conv_spec,
    effective_kernel,
    transpose_out_size,
)

__all__ = ["conv", "conv_backward"]

_DASK_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                  "circular": "wrap"}


@dataclass(frozen=True)
class _Plan:
    """Stride-aligned chunking of one spatial axis: q outputs per chunk (the last may hold
    fewer), padded-input chunks of stride * q rows (the last runs to the end)."""

    out_chunks: tuple[int, ...]
    in_chunks: tuple[int, ...]
    halo_after: int          # forward: input rows a chunk reads past its end
    halo_before: int         # input gradient: dy rows before a chunk that reach into it


def _plan(n_chunks: int, p: int, sp: int, k: int, s: int, d: int) -> _Plan:
    halo_after = max(effective_kernel(k, d) - s, 0)
    halo_before = (effective_kernel(k, d) - 1) // s
    q = max(-(-p // n_chunks), halo_before, -(-halo_after // s), 1)   # chunks hold the halos
    n = -(-p // q)
    while n > 1 and (p - q * (n - 1) < halo_before or sp - s * q * (n - 1) < halo_after):
        n -= 1                                   # the last chunk too must hold a whole halo
    out_chunks = (q,) * (n - 1) + (p - q * (n - 1),)
    in_chunks = (s * q,) * (n - 1) + (sp - s * q * (n - 1),)
    if n == 1:
        halo_after = halo_before = 0
    return _Plan(out_chunks, in_chunks, halo_after, halo_before)


def _plans(spec: ConvSpec, chunks: Any) -> list[_Plan]:
    geometry = zip(spec.out_size, spec.padded_size, spec.kernel_size, spec.stride, spec.dilation)
    return [_plan(len(c), *g) for c, g in zip(chunks[1:-1], geometry)]


def _channels_last(a: Any, spec: ConvSpec) -> Any:
    a = _layout.to_last(a, spec.data_format)                     # (N, *S, C) view
    return a.rechunk({a.ndim - 1: -1})                           # channels in one chunk


def _spatially_chunked(a: Any, spec: ConvSpec) -> bool:
    chunks = a.chunks[2:] if spec.data_format == "channels_first" else a.chunks[1:-1]
    return any(len(c) > 1 for c in chunks)


def _local(spec: ConvSpec, options: dict[str, Any]) -> dict[str, Any]:
    """Keywords of the in-memory op applied to one already padded channels_last chunk."""
    return dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups, **options)


def _as_dask(a: Any, name: str, like: Any = None) -> Any:
    """`a` as a float dask array: a dask array itself, a NumPy one chunked along the batch like
    `like` (a whole chunk without it)."""
    if not _backend.is_dask(a):
        import dask.array as da

        _args.float_array(a, name)
        batch = like.chunks[0] if like is not None and _backend.is_dask(like) else -1
        return da.from_array(a, chunks=(batch, *(-1,) * (a.ndim - 1)))
    if a.dtype not in _args.FLOAT_DTYPES:
        raise TypeError(f"`{name}` must be a float16, float32 or float64 dask array; "
                        f"got dtype {a.dtype}")
    return a


def _check(x: Any, w: Any, geometry: dict[str, Any], options: dict[str, Any]
           ) -> tuple[ConvSpec, Any]:
    """The spec, with every argument checked, and x as a dask array chunked for it."""
    _args.float_array(w, "w")
    spec = conv_spec(x.shape, w.shape, **geometry)
    check_options(options["algorithm"], options["workspace"], spec)
    x = _as_dask(x, "x")
    if spec.padding_mode != "zeros" or not _spatially_chunked(x, spec):
        x = x.rechunk({i: -1 for i in range(1, x.ndim)})       # batch chunks only
    return spec, x


def _padded_plan(x: Any, spec: ConvSpec) -> tuple[Any, list[_Plan]]:
    """x padded, channels_last and rechunked to the stride-aligned plan, and the plans."""
    import dask.array as da

    xl = _channels_last(x, spec)
    plans = _plans(spec, xl.chunks)
    xp = da.pad(xl, ((0, 0), *spec.pads, (0, 0)), mode=_DASK_PAD_MODE[spec.padding_mode])
    return xp.rechunk((xl.chunks[0], *(p.in_chunks for p in plans), -1)), plans


def conv(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
    clip: tuple | None = None,
) -> Any:
    """`npconv.conv` of a dask array x (any chunks) with in-memory w and bias: a dask array.

    Same arguments and result as `npconv.conv`; `algorithm`, `workspace` and `clip` apply to
    every chunk's computation. Chunks along the batch are independent; spatial chunks get a halo
    from their neighbours (zero padding; other padding modes keep the spatial axes whole).

    Examples
    --------
    >>> import numpy as np, dask.array as da, npconv.dask
    >>> x = da.ones((8, 32, 32, 3), chunks=(2, 16, 32, 3))
    >>> y = npconv.dask.conv(x, np.ones((3, 3, 3, 4)), padding=1, workspace=2**20)
    >>> y.shape, float(y[0, 5, 5, 0].compute())
    ((8, 32, 32, 4), 27.0)
    """
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    data_format=data_format, padding_mode=padding_mode)
    options = dict(algorithm=algorithm, workspace=workspace)
    spec, x = _check(x, w, geometry, options)
    if bias is not None:
        _args.float_array(bias, "bias")
        check_shape(bias, (spec.out_channels,), "bias")
    dtype = _args.result_dtype(x, w, bias)
    _args.clip_bounds(clip, dtype, _args.compute_dtype(dtype))  # checked before any chunk runs
    if not _spatially_chunked(x, spec):
        chunks = (x.chunks[0], *((c,) for c in spec.y_shape()[1:]))
        return x.map_blocks(_conv, w, bias, dtype=dtype, chunks=chunks, **geometry, **options,
                            clip=clip)
    return _forward_spatial(x, w, bias, spec, {**options, "clip": clip}, dtype)


def _forward_spatial(x: Any, w: Any, bias: Any, spec: ConvSpec, options: dict[str, Any],
                     dtype: Any) -> Any:
    import dask.array as da

    xp, plans = _padded_plan(x, spec)
    depth = {i + 1: (0, p.halo_after) for i, p in enumerate(plans)}
    xo = da.overlap.overlap(xp, depth=depth, boundary="none")
    w_last = _layout.w_to_last(w, spec.data_format)              # (*K, C/G, F)
    out_chunks = (xp.chunks[0], *(p.out_chunks for p in plans), (spec.out_channels,))
    y = xo.map_blocks(_conv, w_last, bias, dtype=dtype, chunks=out_chunks,
                      **_local(spec, options))
    return _layout.from_last(y, spec.data_format)


def conv_backward(
    dy: Any,
    x: Any,
    w: Any,
    bias: Any = True,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
) -> ConvGrads:
    """`npconv.conv_backward` for dask (or NumPy) dy and x: dask arrays dx chunk by chunk, dw
    and db (unless `bias` is None or False) as tree sums. Same arguments as
    `npconv.conv_backward`.

    Examples
    --------
    >>> import numpy as np, dask.array as da, npconv.dask
    >>> x, w, b = da.ones((8, 16, 16, 3), chunks=2), np.ones((3, 3, 3, 4)), np.zeros(4)
    >>> dx, dw, db = npconv.dask.conv_backward(np.ones((8, 14, 14, 4)), x, w, b)
    >>> dw.shape, float(db.compute()[0])
    ((3, 3, 3, 4), 1568.0)
    """
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    data_format=data_format, padding_mode=padding_mode)
    options = dict(algorithm=algorithm, workspace=workspace)
    spec, x = _check(x, w, geometry, options)
    with_db = wants_db(bias, spec.out_channels)
    if not _backend.is_dask(dy):
        _args.float_array(dy, "dy")
    check_shape(dy, spec.y_shape(), "dy")
    dy = _as_dask(dy, "dy", like=x)
    dtype = _args.result_dtype(dy, x, w)
    if not _spatially_chunked(x, spec):
        dy = dy.rechunk({0: x.chunks[0], **{i: -1 for i in range(1, dy.ndim)}})
        dx = dy.map_blocks(_dx_of_batch_chunk, x, w, dtype=dtype, chunks=x.chunks,
                           **geometry, **options)
        dw = _chunk_sum(x, dy, w.shape, {**geometry, **options}, dtype)
        return ConvGrads(dx, dw, _db(dy, spec) if with_db else None)
    return _backward_spatial(dy, x, w, spec, with_db, options, dtype)


def _dx_of_batch_chunk(dy: Any, x: Any, w: Any, **kwargs: Any) -> Any:
    return _grad_input(dy, w, x.shape, **kwargs)


def _chunk_sum(x: Any, dy: Any, w_shape: tuple[int, ...], kwargs: dict[str, Any],
               dtype: Any) -> Any:
    """Sum over all chunk pairs (x, dy) of their weight gradient: a dask tree reduction."""
    import dask.array as da

    grid = tuple((1,) * n for n in x.numblocks)
    parts = da.map_blocks(_dw_of_chunk, x, dy, w_shape, kwargs, dtype=dtype,
                          chunks=(*grid, *((c,) for c in w_shape)),
                          new_axis=list(range(x.ndim, x.ndim + len(w_shape))))
    return parts.sum(axis=tuple(range(x.ndim)))


def _db(dy: Any, spec: ConvSpec) -> Any:
    return _layout.to_last(dy, spec.data_format).sum(axis=tuple(range(dy.ndim - 1)))


def _backward_spatial(dy: Any, x: Any, w: Any, spec: ConvSpec, with_db: bool,
                      options: dict[str, Any], dtype: Any) -> ConvGrads:
    import dask.array as da

    xp, plans = _padded_plan(x, spec)
    dyl = _channels_last(dy, spec).rechunk((xp.chunks[0], *(p.out_chunks for p in plans), -1))
    w_last = _layout.w_to_last(w, spec.data_format)              # (*K, C/G, F)
    local = _local(spec, options)
    # dw: every padded-input chunk with its forward halo, against the dy chunk it produced
    xo = da.overlap.overlap(xp, depth={i + 1: (0, p.halo_after) for i, p in enumerate(plans)},
                            boundary="none")
    dw = _chunk_sum(xo, dyl, w_last.shape, local, dtype)
    # dx: every dy chunk with the halo of earlier outputs that reach into its input chunk
    dyo = da.overlap.overlap(dyl, depth={i + 1: (p.halo_before, 0) for i, p in enumerate(plans)},
                             boundary="none")
    dxp = da.map_blocks(_dx_of_chunk, dyo, w_last, plans, local, dtype=dtype, chunks=xp.chunks)
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(spec.pads, spec.in_size))
    dx = _layout.from_last(dxp[(slice(None), *crop)], spec.data_format)
    return ConvGrads(dx, _layout.w_from_last(dw, spec.data_format),
                     _db(dy, spec) if with_db else None)


def _dw_of_chunk(x_chunk: Any, dy_chunk: Any, w_shape: tuple[int, ...],
                 kwargs: dict[str, Any]) -> Any:
    """Weight gradient of one chunk pair, shaped (1, ..., 1, *w_shape) for the tree sum."""
    dw = _grad_weight(dy_chunk, x_chunk, w_shape, **kwargs)
    return dw.reshape((1,) * x_chunk.ndim + dw.shape)            # (1, ..., 1, *w_shape)


def _dx_of_chunk(dy_chunk: Any, w: Any, plans: list[_Plan], local: dict[str, Any],
                 block_info: Any = None) -> Any:
    """Gradient of one padded-input chunk from the dy rows that reach into it.

    The received dy chunk starts `before` rows ahead of the chunk's own outputs (0 for the first
    chunk), so its local input gradient starts stride * before rows ahead of the padded-input
    chunk; rows past what those outputs read get zero gradient.
    """
    loc = block_info[0]["chunk-location"]
    before = [p.halo_before if j > 0 else 0 for p, j in zip(plans, loc[1:-1])]
    k = w.shape[:-2]
    sizes = [transpose_out_size(m, kk, s, d, 0, 0, 0)        # input rows these outputs read
             for m, s, d, kk in zip(dy_chunk.shape[1:-1], local["stride"], local["dilation"], k)]
    c = w.shape[-2] * local["groups"]
    dx = _grad_input(dy_chunk, w, (dy_chunk.shape[0], *sizes, c), **local)  # (n, *local, C)
    want = block_info[None]["chunk-shape"]
    out = np.zeros(want, dtype=dx.dtype)                         # (n, *chunk, C)
    take = tuple(slice(s * b, s * b + min(n, size - s * b))
                 for s, b, n, size in zip(local["stride"], before, want[1:-1], sizes))
    put = tuple(slice(0, t.stop - t.start) for t in take)
    out[(slice(None), *put)] = dx[(slice(None), *take)]
    return out

