"""FFT convolution for stride 1: correlation as a product of spectra, any kernel size.

With X = DFT(xp) and H = DFT(h) over the spatial axes (zero-padded to lengths L >= Sp, so no
product wraps around), the circular correlation sum_j a[p + j] h[j] is IDFT(A * conj(H))[p], so

    y[p]     = IDFT(sum_c X[., c] * conj(W[., c, f]))[p]       W = DFT of the dilated kernel
    dw[k, c] = IDFT(sum_n X[n, ., c] * conj(DY[n, ., f]))[k * d]

and the input gradient is the full correlation of dy with the flipped kernel
(`_layout.full_correlation`), i.e. `forward` again. The sums over channels (or over the batch, for
dw) are one batched complex GEMM per chunk, frequencies as the batch axis: no Python loop over
frequencies or groups. The cost is O(prod(L) log prod(L)) per channel plus a GEMM per frequency,
independent of the kernel size, so it wins for large kernels, roughly when prod(K) is well above
the number of channels' worth of transform work; `auto` uses it from `MIN_TAPS` taps.

Allocates the kernel's spectrum (prod(L)/2 x C/G x F complex, once; the weight gradient keeps an
accumulator of that size per worker) and, per chunk of whole images, the input and output
spectra plus NumPy's FFT temporaries (about 4 x prod(L) x (C + F) values per image).
"""

from __future__ import annotations

import math

from npconv import _backend
from npconv.algorithms import _chunks, im2col
from npconv.spec import ConvSpec

MIN_TAPS = 100
"""`auto` picks FFT for stride-1 kernels with at least this many taps ..."""

TAPS_PER_CHANNEL = 8
"""... and at least this many taps per channel (C/G or F/G, the larger): the transforms cost
per channel what im2col's GEMM costs per channel and tap (measured: docs/algorithms.md)."""


def worthwhile(spec: ConvSpec, workspace: int) -> bool:
    """Whether `auto` should prefer FFT to im2col (and it fits in `workspace` bytes)."""
    taps = math.prod(spec.kernel_size)
    return (all(s == 1 for s in spec.stride) and taps >= MIN_TAPS
            and taps >= TAPS_PER_CHANNEL * max(spec.group_in, spec.group_out)
            and _fixed_bytes(spec, 8) + _image_bytes(spec, 8) <= workspace)


def _spectrum_size(spec: ConvSpec) -> int:
    """prod(Lf): frequencies of a real transform of lengths L."""
    lengths = _lengths(spec)
    return math.prod(lengths[:-1]) * (lengths[-1] // 2 + 1)


def _fixed_bytes(spec: ConvSpec, itemsize: int) -> int:
    """The kernel spectrum (or dw's accumulator) with its transform's temporaries: 3 copies of
    prod(Lf) x C/G x F complex values."""
    return 3 * _spectrum_size(spec) * spec.group_in * spec.out_channels * 2 * itemsize


def _image_bytes(spec: ConvSpec, itemsize: int) -> int:
    """One image's spectra and NumPy's FFT temporaries, about 4 x prod(L) x (C + F) values."""
    return 4 * math.prod(_lengths(spec)) * (spec.in_channels + spec.out_channels) * itemsize


def _check_fits(spec: ConvSpec, itemsize: int, settings) -> None:
    need = _fixed_bytes(spec, itemsize) + _image_bytes(spec, itemsize)
    if need > settings.workspace:
        raise ValueError(
            f"`algorithm`='fft' needs {need} bytes of workspace for this convolution (the "
            f"kernel's spectrum and one image's spectra); got workspace={settings.workspace}"
        )


def fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (lengths pocketfft transforms fastest)."""
    best = 1 << max(n - 1, 0).bit_length()                       # a power of two
    f5 = 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            f = f35
            while f < n:
                f *= 2
            best = min(best, f)
            f35 *= 3
        f5 *= 5
    return best


def rfftn(a, lengths, first: int):
    """Real DFT over the axes first .. first + len(lengths) - 1, zero-padded to `lengths`.

    One axis at a time, the real transform on the last of them first: numpy.fft.rfftn with
    `s` pads and transforms slower (float32 especially)."""
    xp = _backend.namespace(a)
    last = first + len(lengths) - 1
    a = xp.fft.rfft(a, n=lengths[-1], axis=last)
    for axis in range(last - 1, first - 1, -1):
        a = xp.fft.fft(a, n=lengths[axis - first], axis=axis)
    return a


def irfftn(a, lengths, first: int):
    """Inverse of `rfftn`: real signals of lengths `lengths`."""
    xp = _backend.namespace(a)
    last = first + len(lengths) - 1
    for axis in range(first, last):
        a = xp.fft.ifft(a, n=lengths[axis - first], axis=axis)
    return xp.fft.irfft(a, n=lengths[-1], axis=last)


def _lengths(spec: ConvSpec):
    return tuple(fast_length(s) for s in spec.padded_size)


def _kernel_spectrum(w, spec: ConvSpec, lengths):
    """conj(DFT(dilated w)): (*K, C/G, F) -> (prod(Lf), G, C/G, F/G) complex."""
    xp = _backend.namespace(w)
    span = [d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation)]
    wd = xp.zeros((*span, spec.group_in, spec.out_channels), dtype=w.dtype)  # (*Kd, C/G, F)
    wd[tuple(slice(None, None, d) for d in spec.dilation)] = w
    h = xp.conj(rfftn(wd, lengths, 0))                           # (*Lf, C/G, F)
    h = h.reshape(-1, spec.group_in, spec.groups, spec.group_out)  # (prod(Lf), C/G, G, F/G)
    return h.transpose(0, 2, 1, 3)                               # (prod(Lf), G, C/G, F/G)


def _spectrum(a, spec: ConvSpec, lengths, groups: int):
    """DFT over the spatial axes, frequencies first: (n, *S, C) -> (prod(Lf), G, n, C/G)."""
    s = rfftn(a, lengths, 1)                                     # (n, *Lf, C)
    s = s.reshape(s.shape[0], -1, groups, s.shape[-1] // groups)  # (n, prod(Lf), G, C/G)
    return s.transpose(1, 2, 0, 3)                               # (prod(Lf), G, n, C/G)


def _plan(spec: ConvSpec, itemsize: int, settings, xp):
    _check_fits(spec, itemsize, settings)
    return _chunks.plan(spec.batch, 1, _image_bytes(spec, itemsize), settings, xp=xp,
                        fixed_bytes=_fixed_bytes(spec, itemsize))


def forward(xp_, w, spec: ConvSpec, settings):
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)) with stride 1, by FFT."""
    xp = _backend.namespace(xp_, w)
    f, lengths = spec.out_channels, _lengths(spec)
    h = _kernel_spectrum(w, spec, lengths)                       # (prod(Lf), G, C/G, F/G)
    y = xp.empty((spec.batch, *spec.out_size, f), dtype=xp_.dtype)  # (N, *P, F)
    chunks, workers = _plan(spec, y.itemsize, settings, xp)
    crop = tuple(slice(0, p) for p in spec.out_size)

    def task(chunk, _):
        batch, _rows = chunk
        s = xp.matmul(_spectrum(xp_[batch], spec, lengths, spec.groups), h)  # (Lf, G, n, F/G)
        n = s.shape[2]
        s = s.transpose(2, 0, 1, 3).reshape(n, *lengths[:-1], -1, f)  # (n, *Lf, F)
        out = irfftn(s, lengths, 1)                              # (n, *L, F)
        y[batch] = out[(slice(None), *crop)]

    _chunks.run(task, chunks, workers, lambda: None)
    return y


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): the full correlation of dy with the flipped kernel, by FFT."""
    return im2col.correlate_grad_input(dy, w, spec, settings, forward)


def grad_input_interior(dy, w, spec: ConvSpec, settings):
    """dx (N, *S, C) for zero padding: only the pixels inside the padding."""
    return im2col.correlate_grad_input(dy, w, spec, settings, forward, interior=True)


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw (*K, C/G, F): per chunk of images, sum_n X^T conj(DY) per frequency; one inverse
    transform at the end, read at the lags k * dilation."""
    xp = _backend.namespace(xp_, dy)
    g, lengths = spec.groups, _lengths(spec)
    acc_shape = (_spectrum_size(spec), g, spec.group_in, spec.group_out)
    chunks, workers = _plan(spec, dy.itemsize, settings, xp)

    def task(chunk, acc):
        batch, _rows = chunk
        sx = _spectrum(xp_[batch], spec, lengths, g)             # (Lf, G, n, C/G)
        sd = xp.conj(_spectrum(dy[batch], spec, lengths, g))     # (Lf, G, n, F/G)
        acc += xp.matmul(sx.transpose(0, 1, 3, 2), sd)           # (Lf, G, C/G, F/G)

    cdtype = xp.result_type(dy.dtype, xp.complex64)
    accs = _chunks.run(task, chunks, workers, lambda: xp.zeros(acc_shape, dtype=cdtype))
    s = sum(accs).transpose(0, 2, 1, 3).reshape(*lengths[:-1], -1, spec.group_in,
                                                spec.out_channels)  # (*Lf, C/G, F)
    lags = irfftn(s, lengths, 0)                                 # (*L, C/G, F)
    taps = tuple(slice(0, d * (k - 1) + 1, d) for k, d in zip(spec.kernel_size, spec.dilation))
    return xp.ascontiguousarray(lags[taps]).astype(dy.dtype, copy=False)  # (*K, C/G, F)
