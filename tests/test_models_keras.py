"""Keras weights onto npconv models (`npconv.models.load_keras`): a Keras 3 model with
convolution, depthwise convolution, batch norms (one without center, other eps and momentum),
a residual sum, a transposed convolution and a Dense head gives Keras' predictions once its
.keras or .weights.h5 file is loaded into the same architecture written in npconv, in either
layout; another architecture is one ValueError naming every mismatch."""

import os

import numpy as np
import pytest
from helpers import rel_err

from npconv import io, models, nn

pytest.importorskip("h5py")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    """(the trained Keras model, the folder holding its .keras and .weights.h5 files)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    x = keras.Input((8, 8, 3))
    a = layers.ReLU()(layers.BatchNormalization(name="bn")(
        layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(x)))
    b = layers.DepthwiseConv2D(3, padding="same")(a)
    b = layers.ReLU()(layers.BatchNormalization(epsilon=1e-2, momentum=0.9, center=False)(b))
    c = layers.Conv2DTranspose(2, 2, strides=2)(layers.Add()([a, b]))
    model = keras.Model(x, layers.Dense(5)(layers.GlobalAveragePooling2D()(c)))
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((16, 8, 8, 3)), rng.standard_normal((16, 5)), epochs=3,
              verbose=0)                                   # batch-norm statistics move
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "m.keras")
    model.save_weights(folder / "m.weights.h5")
    return model, folder


class Net(nn.Module):
    """The Keras model's architecture in npconv."""

    def __init__(self, data_format="channels_last", width=4):
        super().__init__()
        f = dict(data_format=data_format)
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False, **f)
        self.bn = nn.BatchNorm2d(width, eps=1e-3, **f)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width, **f)
        self.bn2 = nn.BatchNorm2d(width, eps=1e-3, **f)
        self.up = nn.ConvTranspose2d(width, 2, 2, stride=2, **f)
        self.pool = nn.GlobalAvgPool(**f)
        self.fc = nn.Linear(2, 5)

    def forward(self, x):
        a = self.relu(self.bn(self.stem(x)))
        b = self.relu(self.bn2(self.dw(a)))
        return self.fc(self.pool(self.up(nn.add(a, b))))


X = np.random.default_rng(1).standard_normal((3, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_keras_archive_gives_keras_predictions(keras_model, fmt):
    model, folder = keras_model
    net = Net(fmt)
    where = models.load_keras(net, folder / "m.keras")
    assert where == {"stem": "conv2d", "bn": "batch_normalization", "dw": "depthwise_conv2d",
                     "bn2": "batch_normalization_1", "up": "conv2d_transpose", "fc": "dense"}
    assert net.bn2.eps == 1e-2 and net.bn2.momentum == 0.9                  # from the config
    assert net.bn.convention == "keras" and net.bn.momentum == 0.99
    x = X if fmt == "channels_last" else np.ascontiguousarray(np.moveaxis(X, -1, 1))
    assert rel_err(net.forward(x), model.predict(X, verbose=0)) < 1e-5
    assert rel_err(net.eval().forward(x), model.predict(X, verbose=0)) < 1e-5


def test_weights_file_with_and_without_config(keras_model):
    """A weights-only file has no config: the layers come by name, batch norms keep their eps,
    and one without center is ambiguous (which variable is missing?) until a config is given."""
    model, folder = keras_model
    net = Net()
    with pytest.raises(ValueError, match=r"bn2: expects 4 variables, the file's "
                                         r"batch_normalization_1 holds 3 .*give the model's"):
        models.load_keras(net, folder / "m.weights.h5")
    config = io.load_keras(folder / "m.keras")[1]
    models.load_keras(net, io.load(folder / "m.weights.h5"), config=config)
    assert rel_err(net.forward(X), model.predict(X, verbose=0)) < 1e-5


def test_another_architecture_is_refused(keras_model):
    _, folder = keras_model
    net = Net(width=6)
    before = net.params["stem.weight"].copy()
    with pytest.raises(ValueError) as info:
        models.load_keras(net, folder / "m.keras")
    message = str(info.value)
    assert "another architecture" in message
    assert "stem.weight: expects shape (3, 3, 3, 6), the file's conv2d holds (3, 3, 3, 4)" \
        in message
    assert "fc.weight" not in message                               # it fits
    assert np.array_equal(net.params["stem.weight"], before)       # nothing written

    class Longer(Net):
        def __init__(self):
            super().__init__()
            self.extra = nn.Conv2d(2, 2, 1)

    with pytest.raises(ValueError, match="conv2d: the model has 2, the file 1"):
        models.load_keras(Longer(), folder / "m.keras")
    grouped = Net()
    grouped.dw = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    with pytest.raises(ValueError, match="dw \\(Conv2d\\): no Keras layer kind"):
        models.load_keras(grouped, folder / "m.keras")



@pytest.mark.parametrize("bn", [{"epsilon": "abc"}, {"epsilon": -1.0}, {"momentum": 5},
                                {"epsilon": float("nan")}, {"momentum": [0.9]}])
def test_batch_norm_settings_of_the_config_are_checked_before_anything_is_written(bn):
    """Before the fix: float("abc") failed after the convolution's weights were written, and
    epsilon=-1 or momentum=5 were taken as they were."""
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    source = {"conv2d/vars/0": np.ones((1, 1, 2, 2), np.float32),
              "conv2d/vars/1": np.ones(2, np.float32),
              **{f"batch_normalization/vars/{i}": np.ones(2, np.float32) for i in range(4)}}
    config = {"config": {"layers": [{"class_name": "Conv2D", "config": {}},
                                    {"class_name": "BatchNormalization", "config": bn}]}}
    with pytest.raises(ValueError, match=r"1: the config of batch_normalization gives epsilon="
                                         r".*; expected epsilon > 0 and momentum in \[0, 1\]"):
        models.load_keras(net, source, config=config)
    assert all(np.array_equal(v, before[k]) for k, v in net.state_dict().items())

def test_training_continues_as_in_keras(keras_model):
    """After load_keras, a training pass updates the batch norms' moving statistics as Keras'
    BatchNormalization does (momentum * old + (1 - momentum) * batch, biased variance)."""
    import keras

    model, folder = keras_model
    net = Net()
    models.load_keras(net, folder / "m.keras")
    net.forward(X, training=True)
    clone = keras.models.clone_model(model)                        # the fixture stays as is
    clone.set_weights(model.get_weights())
    bn = clone.get_layer("bn")
    keras.Model(clone.inputs, bn.output)([X], training=True)       # Keras' own update
    for ours, theirs in (("running_mean", bn.moving_mean), ("running_var", bn.moving_variance)):
        assert rel_err(net.bn.buffers[ours], np.asarray(theirs)) < 1e-5, ours
