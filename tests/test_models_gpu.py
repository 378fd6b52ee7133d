"""npconv.models on a GPU (`model.to(cupy)`): evaluation (folded and not), a training step's
gradients and state_dict equal the NumPy model's. Skipped unless CuPy sees a GPU."""

import numpy as np
from helpers import cupy_or_skip, rel_err

from npconv import models, nn

cp = cupy_or_skip()


def pair():
    kw = dict(num_classes=5, width=4, dtype="float64")
    return (models.resnet18(rng=np.random.default_rng(0), **kw),
            models.resnet18(rng=np.random.default_rng(0), **kw).to(cp))


def test_resnet_on_gpu_equals_numpy():
    cpu, gpu = pair()
    x = np.random.default_rng(1).standard_normal((4, 24, 24, 3))
    xg = cp.asarray(x)
    assert rel_err(cp.asnumpy(gpu.forward(xg)), cpu.forward(x)) < 1e-10
    assert rel_err(cp.asnumpy(gpu.eval().forward(xg)), cpu.forward(x)) < 1e-10
    gpu.train()
    labels = np.array([0, 1, 2, 3])
    for model, xs, ys in ((cpu, x, labels), (gpu, xg, cp.asarray(labels))):
        _, dlogits = nn.softmax_cross_entropy(model.forward(xs, training=True), ys)
        model.backward(dlogits)
    for key, g in cpu.grads.items():
        assert isinstance(gpu.grads[key], cp.ndarray)
        assert rel_err(cp.asnumpy(gpu.grads[key]), g) < 1e-8, key
    state = gpu.state_dict()
    for key, v in cpu.state_dict().items():
        assert rel_err(cp.asnumpy(state[key]), v) < 1e-10, key
