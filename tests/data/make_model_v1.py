"""Wrote tests/data/model_v1.npz and model_v1_io.npz with npconv 0.1, the last version-1 code
(commit cf42279): every layer type of that version, trained a few steps, and an input with the
output it gave, for test_nn_serialization.py's version-1 test. It runs only against that code:

    git archive cf42279 src/npconv | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tests/data/make_model_v1.py tests/data
"""
import sys

import numpy as np

from npconv import nn

assert not hasattr(nn, "Linear")
R = np.random.default_rng
model = nn.Sequential(
    nn.Conv(1, 4, (3, 3), padding=1, rng=R(0)), nn.BatchNorm(4, momentum=0.3), nn.LeakyReLU(0.05),
    nn.ConvTranspose(4, 4, (2, 2), stride=2, groups=2, bias=False, rng=R(1)),
    nn.MaxPool(2), nn.Tanh(),
    nn.Sequential(nn.AvgPool(2, stride=1, padding=1, count_include_pad=False), nn.Sigmoid(),
                  nn.BatchNorm(4)),
    nn.Dropout(0.25, rng=R(2)), nn.GlobalAvgPool(), nn.Flatten(),
    nn.Dense(4, 3, init="glorot_uniform", rng=R(3)), nn.ReLU(), nn.Dense(3, 2, bias=False, rng=R(4)))
x = R(5).random((3, 6, 6, 1), dtype=np.float32)
opt = nn.Adam(lr=0.05)
for _ in range(3):
    y = model.forward(x, training=True)
    model.backward(np.ones_like(y))
    opt.step(model.params, model.grads)
nn.save(model, sys.argv[1] + "/model_v1.npz", metadata={"seed": 7})
np.savez(sys.argv[1] + "/model_v1_io.npz", x=x, y=model.forward(x, training=False))
print(sorted(model.params), sorted(model.buffers))
