"""The core's public API is typed: every parameter and return of its public functions is
annotated, and the package ships `py.typed` (mypy checks src/npconv in `make lint`)."""

import inspect
from pathlib import Path

import pytest

import npconv
import npconv.dask
from npconv import reference
from npconv.spec import ConvSpec

CORE = [npconv.conv, npconv.conv_backward, npconv.conv_grad_input, npconv.conv_grad_weight,
        npconv.conv_transpose, npconv.conv_transpose_backward, npconv.conv_spec,
        npconv.conv_transpose_spec, npconv.set_config, npconv.get_config, npconv.config,
        npconv.release_workspace, npconv.dask.conv, npconv.dask.conv_backward, reference.conv,
        reference.conv_backward, reference.conv_transpose, reference.conv_transpose_backward,
        *(getattr(ConvSpec, name) for name in ("window", "taps", "transposed", "rows", "macs",
                                                "x_shape", "y_shape", "w_shape"))]


@pytest.mark.parametrize("fn", CORE, ids=lambda fn: fn.__qualname__)
def test_public_signatures_are_annotated(fn):
    sig = inspect.signature(fn)
    missing = [p.name for p in sig.parameters.values()
               if p.annotation is inspect.Parameter.empty and p.name != "self"]
    assert missing == [] and sig.return_annotation is not inspect.Signature.empty


def test_py_typed_ships():
    assert (Path(npconv.__file__).parent / "py.typed").exists()
