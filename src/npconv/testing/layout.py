"""Array layouts of the code under test, and the axis names used in reports.

The checker computes everything channels_last: x, dx, y, dy are (N, *S, C) and w, dw are
(*K, C/G, F) (for a transposed convolution (*K, F/G, C)), npconv's channels_last layouts. A
`Layout` turns those into the user's layout and back, and names axes in the user's order ("dw
comes back as (F, C, kh, kw)") so a report speaks the user's language. Array kinds: "x" (x,
dx, y, dy), "w" (w, dw), "b" (b, db).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")
WEIGHT_LAYOUTS = ("HWIO", "OIHW", "OHWI", "IOHW")
_DEFAULT_WEIGHT_LAYOUT = {"channels_last": "HWIO", "channels_first": "OIHW"}


def spatial_names(rank: int) -> tuple[str, ...]:
    """("W",), ("H", "W"), ("D", "H", "W"), then S1, S2, ... for higher ranks."""
    return (("W",), ("H", "W"), ("D", "H", "W"))[rank - 1] if rank <= 3 else tuple(
        f"S{i + 1}" for i in range(rank))


def axis_nouns(rank: int) -> tuple[str, ...]:
    """What one index along each spatial axis is called in prose."""
    return (("position",), ("row", "column"), ("slice", "row", "column"))[rank - 1] \
        if rank <= 3 else tuple(f"axis-{i + 1} index" for i in range(rank))


@dataclass(frozen=True)
class Layout:
    """The user's layouts for activations and weights.

    Parameters
    ----------
    data_format : "channels_last" or "channels_first"
        x, y, dx, dy are (N, *S, C) or (N, C, *S).
    weight_layout : "HWIO", "OIHW", "OHWI" or "IOHW", optional
        w and dw; HW stands for every kernel axis. Default: HWIO for channels_last, OIHW
        (PyTorch) for channels_first.

    Examples
    --------
    >>> import numpy as np
    >>> layout = Layout("channels_first")
    >>> layout.to_user("w", np.zeros((3, 2, 5, 7))).shape     # (kh, kw, C, F) -> (F, C, kh, kw)
    (7, 5, 3, 2)
    >>> layout.labels("w", 2)
    ('F', 'C', 'kh', 'kw')
    """

    data_format: str = "channels_last"
    weight_layout: str | None = None

    def __post_init__(self) -> None:
        if self.data_format not in DATA_FORMATS:
            raise ValueError(f"`data_format` must be one of {DATA_FORMATS}; "
                             f"got {self.data_format!r}")
        if self.weight_layout is None:
            object.__setattr__(self, "weight_layout", _DEFAULT_WEIGHT_LAYOUT[self.data_format])
        if self.weight_layout not in WEIGHT_LAYOUTS:
            raise ValueError(f"`weight_layout` must be one of {WEIGHT_LAYOUTS}; "
                             f"got {self.weight_layout!r}")

    def perm(self, kind: str, rank: int) -> tuple[int, ...]:
        """Axes of the canonical array in the user's order: user = canonical.transpose(perm)."""
        r = rank
        if kind == "x":
            return tuple(range(r + 2)) if self.data_format == "channels_last" else (
                0, r + 1, *range(1, r + 1))
        if kind == "w":
            k = tuple(range(r))
            return {"HWIO": (*k, r, r + 1), "OIHW": (r + 1, r, *k),
                    "OHWI": (r + 1, *k, r), "IOHW": (r, r + 1, *k)}[str(self.weight_layout)]
        return (0,)

    def to_user(self, kind: str, a: np.ndarray) -> np.ndarray:
        """Canonical -> user's layout, as a contiguous copy the user's code may keep."""
        rank = a.ndim - 2 if kind in ("x", "w") else 0
        return np.array(a.transpose(self.perm(kind, rank)), order="C")

    def from_user(self, kind: str, a: np.ndarray) -> np.ndarray:
        """User's layout -> canonical (the inverse transpose)."""
        rank = a.ndim - 2 if kind in ("x", "w") else 0
        return a.transpose(np.argsort(self.perm(kind, rank)))

    def labels(self, kind: str, rank: int, channel: str = "C",
               transposed: bool = False) -> tuple[str, ...]:
        """Axis names in the user's order; `channel` names an activation's channel axis; a
        transposed convolution's weight is (*K, F, C) in npconv's layout."""
        sp = spatial_names(rank)
        io = ("F", "C") if transposed else ("C", "F")
        canonical = {"x": ("N", *sp, channel),
                     "w": (*(f"k{s.lower()}" for s in sp), *io),
                     "b": ("F",)}[kind]
        return tuple(canonical[i] for i in self.perm(kind, rank))

    def user_index(self, kind: str, index: tuple[int, ...]) -> tuple[int, ...]:
        """A canonical index, written in the user's axis order."""
        return tuple(index[i] for i in self.perm(kind, len(index) - 2 if kind != "b" else 0))

    def describe(self, weights: bool = True, transposed: bool = False) -> str:
        """E.g. "channels_last x (N, H, W, C), w (kh, kw, C, F)"; only x without `weights`."""
        x = ", ".join(self.labels("x", 2))
        if not weights:
            return f"{self.data_format} x ({x})"
        w = ", ".join(self.labels("w", 2, transposed=transposed))
        return f"{self.data_format} x ({x}), w ({w})"
