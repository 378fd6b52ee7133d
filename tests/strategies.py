"""Hypothesis strategies that build valid convolution geometry by construction.

Kernel size, dilation, stride and padding are drawn first; the input size is then drawn from
the range where the output size is >= 1 and the padding mode is legal, so no example is
rejected. Sizes stay small because the oracle (`npconv.reference`) is a naive loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

PADDING_FORMS = ("int", "per_dim", "pairs", "valid", "same", "full")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DATA_FORMATS = ("channels_last", "channels_first")


@dataclass
class Geometry:
    """One drawn convolution: shapes in the caller's layout and the keyword arguments."""

    x_shape: tuple
    w_shape: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        fmt = self.kwargs.get("data_format", "channels_last")
        return self.w_shape[-1] if fmt == "channels_last" else self.w_shape[0]

    def arrays(self, rng: np.random.Generator, dtype=np.float64):
        """x, w and a bias of this geometry, drawn from a standard normal."""
        x = rng.standard_normal(self.x_shape).astype(dtype)
        w = rng.standard_normal(self.w_shape).astype(dtype)
        b = rng.standard_normal(self.out_channels).astype(dtype)
        return x, w, b


def _padding(draw, form: str, rank: int):
    """(padding argument, explicit pairs or None for the string forms)."""
    if form == "int":
        p = draw(st.integers(0, 3))
        return p, [(p, p)] * rank
    if form == "per_dim":
        ps = [draw(st.integers(0, 3)) for _ in range(rank)]
        return tuple(ps), [(p, p) for p in ps]
    if form == "pairs":
        pairs = [(draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(rank)]
        return tuple(pairs), pairs
    return form, None


def min_size(eff: int, pair, mode: str) -> int:
    """Smallest input size with output >= 1 that `mode` can pad by `pair`."""
    if pair is None:              # "valid", "same", "full": S >= the dilated kernel is enough
        return eff
    lo, hi = pair
    need = max(1, eff - lo - hi)
    if mode == "reflect":
        need = max(need, max(lo, hi) + 1)
    if mode == "circular":
        need = max(need, max(lo, hi))
    return need


def _channels(draw, groups: bool):
    g = draw(st.sampled_from([1, 1, 2, 3])) if groups else 1
    return g, g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))


@st.composite
def conv_geometry(
    draw,
    ranks=(1, 2, 3),
    modes=PADDING_MODES,
    forms=PADDING_FORMS,
    data_formats=DATA_FORMATS,
    max_stride: int = 3,
    max_dilation: int = 3,
    groups: bool = True,
):
    """A valid `npconv.conv` geometry: every rank, layout, padding form and mode, groups."""
    rank = draw(st.sampled_from(ranks))
    small = rank == 3                                # keep 3D loops of the oracle short
    mode = draw(st.sampled_from(modes))
    k = [draw(st.integers(1, 2 if small else 4)) for _ in range(rank)]
    d = [draw(st.integers(1, min(max_dilation, 2) if small else max_dilation)) for _ in k]
    s = [draw(st.integers(1, max_stride)) for _ in k]
    padding, pairs = _padding(draw, draw(st.sampled_from(forms)), rank)
    size = []
    for i in range(rank):
        low = min_size(d[i] * (k[i] - 1) + 1, pairs[i] if pairs else None, mode)
        size.append(draw(st.integers(low, low + (2 if small else 4))))
    g, c, f = _channels(draw, groups)
    n = draw(st.integers(1, 2))
    fmt = draw(st.sampled_from(data_formats))
    if fmt == "channels_last":
        x_shape, w_shape = (n, *size, c), (*k, c // g, f)
    else:
        x_shape, w_shape = (n, c, *size), (f, c // g, *k)
    kwargs = dict(stride=tuple(s), padding=padding, dilation=tuple(d), groups=g,
                  data_format=fmt, padding_mode=mode)
    return Geometry(x_shape, w_shape, kwargs)


@st.composite
def transpose_geometry(draw, ranks=(1, 2, 3), data_formats=DATA_FORMATS, forms=PADDING_FORMS):
    """A valid `npconv.conv_transpose` geometry, output_padding included."""
    rank = draw(st.sampled_from(ranks))
    small = rank == 3
    k = [draw(st.integers(1, 2 if small else 4)) for _ in range(rank)]
    d = [draw(st.integers(1, 2 if small else 3)) for _ in k]
    s = [draw(st.integers(1, 3)) for _ in k]
    extra = [draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d)]
    form = draw(st.sampled_from(forms))
    padding, pairs = _padding(draw, form, rank)
    size = []
    for i in range(rank):
        eff = d[i] * (k[i] - 1) + 1
        lo_hi = sum(pairs[i]) if pairs else (2 * (eff - 1) if form == "full" else 0)
        low = 1 + max(0, -(-(lo_hi + 1 - eff - extra[i]) // s[i]))   # output size >= 1
        size.append(draw(st.integers(low, low + (1 if small else 3))))
    g, c, f = _channels(draw, True)
    n = draw(st.integers(1, 2))
    fmt = draw(st.sampled_from(data_formats))
    if fmt == "channels_last":
        x_shape, w_shape = (n, *size, c), (*k, f // g, c)
    else:
        x_shape, w_shape = (n, c, *size), (c, f // g, *k)
    kwargs = dict(stride=tuple(s), padding=padding, output_padding=tuple(extra),
                  dilation=tuple(d), groups=g, data_format=fmt)
    return Geometry(x_shape, w_shape, kwargs)


def transpose_bias_size(geom: Geometry) -> int:
    """Output channels F of a transposed-convolution geometry."""
    fmt = geom.kwargs["data_format"]
    fg = geom.w_shape[-2] if fmt == "channels_last" else geom.w_shape[1]
    return fg * geom.kwargs["groups"]
