"""The training loop, data preparation and reporting helpers of npconv.training."""

import gzip
import os
import struct
import tracemalloc

import numpy as np
import pytest

from npconv import nn, training

R = np.random.default_rng


@pytest.fixture(scope="module")
def digits():
    """A small seeded subset of the embedded digits: 400 train, 100 validation images."""
    split, _, _ = training.seed_streams(0)
    data = training.load_data(rng=split)
    return data.x_train[:400], data.y_train[:400], data.x_val[:100], data.y_val[:100]


def small_model(seed=0):
    return training.digits_cnn(rng=R(seed), width=8)


def test_seeded_training_run_lowers_the_loss(digits):
    x, y, xv, yv = digits
    model = small_model()
    history = training.fit(model, x, y, optimizer=nn.Adam(lr=0.01), epochs=3, batch_size=32,
                           rng=R(1), validation=(xv, yv))
    assert history.epoch == [1, 2, 3]
    assert history.loss[-1] < 0.6 * history.loss[0]
    assert history.val_accuracy[-1] > 0.6                          # chance is 0.1
    loss, acc = training.evaluate(model, xv, yv)
    assert acc == pytest.approx(history.val_accuracy[-1]) and loss == history.val_loss[-1]


def test_training_is_deterministic_for_a_seed(digits):
    x, y, _, _ = digits
    runs = []
    for _ in range(2):
        model = small_model(seed=5)
        h = training.fit(model, x[:128], y[:128], optimizer=nn.SGD(lr=0.05, momentum=0.9),
                         epochs=2, batch_size=16, rng=R(6), augment=training.random_shift)
        runs.append((h.loss, h.accuracy, model.params))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    for k, v in runs[0][2].items():
        np.testing.assert_array_equal(v, runs[1][2][k])


def test_fit_reports_through_callbacks_and_restores_lr(digits):
    x, y, _, _ = digits
    seen, epochs = [], []
    opt = nn.Adam(lr=0.01)
    training.fit(small_model(), x[:40], y[:40], optimizer=opt, epochs=2, batch_size=16, rng=R(0),
                 on_batch=lambda i, n, loss, acc: seen.append((i, n)),
                 on_epoch=lambda h: epochs.append(h.row()["epoch"]))
    assert seen == [(0, 3), (1, 3), (2, 3)] * 2 and epochs == [1, 2]
    assert opt.lr == 0.01


def test_fit_checks_labels_before_training(digits):
    x, y, _, _ = digits
    model = small_model()
    before = {k: v.copy() for k, v in model.params.items()}
    bad = y[:20].copy()
    bad[7] = 10                                                    # 10 classes: 0..9
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 10\)"):
        training.fit(model, x[:20], bad, optimizer=nn.SGD(), epochs=1, batch_size=8, rng=R(0))
    with pytest.raises(ValueError, match=r"`y` must be an array of shape \(20,\)"):
        training.fit(model, x[:20], y[:19], optimizer=nn.SGD(), epochs=1, batch_size=8,
                     rng=R(0))
    with pytest.raises(ValueError, match=r"`y_val` must be an array of shape \(5,\)"):
        training.fit(model, x[:20], y[:20], optimizer=nn.SGD(), epochs=1, batch_size=8,
                     rng=R(0), validation=(x[:5], y[:4]))
    with pytest.raises(ValueError, match="`epochs` must be an int >= 1"):
        training.fit(model, x[:20], y[:20], optimizer=nn.SGD(), epochs=0, batch_size=8,
                     rng=R(0))
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        training.fit(model, x[:20], y[:20], optimizer=nn.SGD(), epochs=1, batch_size=8,
                     rng=R(0), schedule="step")
    with pytest.raises(ValueError, match="expects `x` with 1 channels"):
        training.fit(model, np.zeros((4, 8, 8, 3), np.float32), y[:4], optimizer=nn.SGD(),
                     epochs=1, batch_size=8, rng=R(0))
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_run_epochs_is_the_loop_around_any_steps():
    """The loop shared by fit and distributed.fit, on steps that report fixed numbers: the
    cosine schedule step by step, the running means, the history, and the learning rate
    restored at the end and after an error."""
    lrs, seen = [], []

    def steps_of(opt, last=lambda: (4.0, 0, 1)):
        def step(value, hits, n):
            lrs.append(opt.lr)
            return value, hits, n
        return lambda: [lambda: step(1.0, 1, 2), last]

    opt = nn.SGD(lr=0.1)
    history = training.run_epochs(small_model(), steps_of(opt), optimizer=opt, epochs=2,
                                  steps_per_epoch=2, on_batch=lambda *a: seen.append(a))
    assert lrs == [training.cosine_lr(0.1, s, 4) for s in (0, 2)] and opt.lr == 0.1
    assert seen[:2] == [(0, 2, 1.0, 0.5), (1, 2, 2.0, 1 / 3)]
    assert history.loss == [2.0, 2.0] and history.accuracy == [1 / 3, 1 / 3]
    assert np.isnan(history.val_loss).all() and history.epoch == [1, 2]
    with pytest.raises(ZeroDivisionError):
        training.run_epochs(small_model(), steps_of(opt, lambda: 1 / 0), optimizer=opt,
                            epochs=1, steps_per_epoch=2)
    assert opt.lr == 0.1
    lrs.clear()
    constant = nn.SGD(lr=0.1)
    training.run_epochs(small_model(), steps_of(constant, lambda: (opt.lr, 0, 1)),
                        optimizer=constant, epochs=2, steps_per_epoch=2, schedule="constant")
    assert lrs == [0.1, 0.1]


def test_cosine_lr():
    assert training.cosine_lr(0.1, 0, 10) == 0.1
    assert training.cosine_lr(0.1, 5, 10) == pytest.approx(0.05)
    assert training.cosine_lr(0.1, 10, 10) == pytest.approx(0.0)


def test_random_shift_moves_each_image_by_at_most_one_pixel():
    x = R(0).random((50, 6, 7, 2))
    copy = x.copy()
    y = training.random_shift(x, R(1))
    np.testing.assert_array_equal(x, copy)
    assert y.shape == x.shape and y.dtype == x.dtype
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    found = set()
    for i in range(len(x)):                            # a test may loop over samples
        matches = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)
                   if np.array_equal(y[i], xp[i, 1 + a:7 + a, 1 + b:8 + b])]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) == 9                             # every offset occurs
    np.testing.assert_array_equal(training.random_shift(x, R(1)), y)


def test_load_data_digits_split():
    a = training.load_data(rng=training.seed_streams(3)[0])
    b = training.load_data(rng=training.seed_streams(3)[0], val_fraction=0.3)
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 1797 and len(a.y_test) == 359
    np.testing.assert_array_equal(a.x_test, b.x_test)              # test split: seed only
    assert a.x_train.dtype == np.float32 and a.x_train.shape[1:] == (8, 8, 1)
    assert "1294 train / 144 validation / 359 test" in a.describe()
    with pytest.raises(ValueError, match="`seed` must be an int >= 0"):
        training.seed_streams(-1)


def test_load_data_mnist_npz(tmp_path):
    rng = R(0)
    arrays = {f"x_{k}": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
              for k, n in (("train", 30), ("test", 10))}
    arrays.update(y_train=rng.integers(0, 10, 30, dtype=np.uint8),
                  y_test=rng.integers(0, 10, 10, dtype=np.uint8))
    np.savez(tmp_path / "fashion.npz", **arrays)
    data = training.load_data(tmp_path / "fashion.npz", rng=rng)
    assert data.x_test.shape == (10, 28, 28, 1) and len(data.y_train) + len(data.y_val) == 30
    assert data.pixel_max == 255.0 and data.name == "fashion.npz"
    model = training.digits_cnn(rng=rng, input_shape=(28, 28, 1), width=2)
    assert model.forward(data.x_test).shape == (10, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        training.digits_cnn(rng=rng, input_shape=(10, 10, 1))
    arrays.update(x_train=arrays["x_train"][:2], y_train=arrays["y_train"][:2])
    np.savez(tmp_path / "tiny.npz", **arrays)               # before: the file was not named
    with pytest.raises(ValueError, match=r"tiny\.npz: 2 training images; `val_fraction` must "
                                         r"leave both sets non-empty; got val_fraction=0\.1"):
        training.load_data(tmp_path / "tiny.npz", rng=rng)


def test_prepare_and_read_images(tmp_path):
    raw = R(0).integers(0, 17, (5, 8, 8), dtype=np.uint8)
    for shape in [(5, 8, 8), (5, 8, 8, 1)]:
        x = training.prepare_images(raw.reshape(shape), (8, 8, 1), 16.0)
        assert x.shape == (5, 8, 8, 1) and x.dtype == np.float32 and x.max() <= 1
    assert training.prepare_images(raw[0], (8, 8, 1), 16.0).shape == (1, 8, 8, 1)
    floats = raw.astype(np.float64) / 16
    np.testing.assert_array_equal(training.prepare_images(floats, (8, 8, 1), 16.0)[..., 0],
                                  floats.astype(np.float32))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 8, 8, 1\) or \(N, 8, 8\)"):
        training.prepare_images(np.zeros((5, 28, 28)), (8, 8, 1), 16.0)
    with pytest.raises(TypeError, match="images must be an integer or float array"):
        training.prepare_images(np.array(["a"]), (8, 8, 1), 16.0)
    np.save(tmp_path / "a.npy", raw)
    np.savez(tmp_path / "b.npz", x=raw, y=np.arange(5))
    np.savez(tmp_path / "c.npz", a=raw, b=raw)
    header = struct.pack(">HBB3I", 0, 0x08, 3, 5, 8, 8)
    (tmp_path / "d-idx3-ubyte.gz").write_bytes(gzip.compress(header + raw.tobytes()))
    for name in ("a.npy", "b.npz", "d-idx3-ubyte.gz"):
        np.testing.assert_array_equal(training.read_images(tmp_path / name), raw)
    with pytest.raises(ValueError, match="needs a key 'x' or a single array"):
        training.read_images(tmp_path / "c.npz")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        training.read_images(tmp_path / "none.npy")


def test_predict_proba_and_summary():
    model = small_model()
    p = training.predict_proba(model, R(0).random((7, 8, 8, 1), dtype=np.float32), batch_size=3)
    assert p.shape == (7, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1)
    table = training.summary(model, (8, 8, 1))
    assert "Conv2d [weight (3, 3, 1, 8)]" in table and "(N, 2, 2, 16)" in table
    total = sum(v.size for v in model.params.values())
    assert table.splitlines()[-1].split()[-1] == str(total)


def test_make_optimizer():
    assert isinstance(training.make_optimizer("adamw", lr=0.1), nn.AdamW)
    sgd = training.make_optimizer("sgd", lr=0.1, weight_decay=0.01)
    assert sgd.nesterov and sgd.momentum == 0.9 and sgd.weight_decay == 0.01
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        training.make_optimizer("rmsprop", lr=0.1)


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    h = training.History([1, 2], [1.0, 0.5], [0.5, 0.8], [1.1, 0.6], [0.4, 0.7], [0.1, 0.1])
    path = training.plot_history(h, tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("change, error, match", [
    (dict(validation=("x",)), TypeError, r"`validation` must be a pair \(x_val, y_val\)"),
    (dict(rng=0), TypeError, r"`rng` must be a numpy.random.Generator; got int"),
    (dict(rng=None), TypeError, r"`rng` must be a numpy.random.Generator; got NoneType"),
    (dict(optimizer=None), TypeError, r"`optimizer` must be an npconv.nn optimizer"),
    (dict(epochs=2.0), TypeError, r"`epochs` must be an int >= 1; got 2.0"),
    (dict(batch_size=0), ValueError, r"`batch_size` must be an int >= 1; got 0"),
    (dict(empty=True), ValueError, r"`x` must hold at least one image to train on; got shape"),
])
def test_fit_rejects_bad_arguments_before_training(change, error, match):
    from npconv import nn, training

    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=rng, dtype="float64"))
    x, y = rng.standard_normal((6, 2, 2, 1)), rng.integers(0, 3, 6)
    if change.pop("empty", False):
        x, y = x[:0], y[:0]
    kw = {**dict(optimizer=nn.SGD(lr=0.1), epochs=1, batch_size=2, rng=rng), **change}
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(error, match=match):
        training.fit(model, x, y, **kw)
    assert all(np.array_equal(model.params[k], v) for k, v in before.items())


@pytest.mark.parametrize("bad, count", [(np.nan, 1), (np.inf, 1), (-np.inf, 2)])
def test_prepare_images_rejects_nan_and_inf(bad, count):
    """Before the fix, NaN / inf images were predicted as class 0 with probability nan."""
    x = np.zeros((5, 8, 8), np.float32)
    x[3, 2, 2] = bad
    if count == 2:
        x[4, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"images must be finite: {count} of 5 hold NaN or "
                                         r"infinite pixels \(the first is image 3\)"):
        training.prepare_images(x, (8, 8, 1), 16.0)
    with pytest.raises(ValueError, match=r"no images to predict: got shape \(0, 8, 8\)"):
        training.prepare_images(x[:0], (8, 8, 1), 16.0)


def test_out_of_range_warns_only_far_outside_the_training_range():
    assert training.out_of_range(np.array([0.0, 1.9]), 0.0, 1.0) is None
    assert training.out_of_range(np.array([-0.9, 1.0]), 0.0, 1.0) is None
    assert "span [0, 2.5], far outside the training images' [0, 1]" in \
        training.out_of_range(np.array([0.0, 2.5]), 0.0, 1.0)
    assert training.out_of_range(np.array([-3.0, 0.0]), 0.0, 1.0) is not None


@pytest.mark.parametrize("batch_size, error", [(-1, ValueError), (0, ValueError),
                                               (2.0, TypeError)])
def test_predict_rejects_a_bad_batch_size(batch_size, error):
    """Before the fix, batch_size=-1 returned shape (0, 0) for 10 images."""
    x = np.zeros((10, 8, 8, 1), np.float32)
    with pytest.raises(error, match=rf"`batch_size` must be an int >= 1; got {batch_size}"):
        training.predict_logits(small_model(), x, batch_size=batch_size)
    with pytest.raises(error, match="`batch_size` must be an int >= 1"):
        training.evaluate(small_model(), x, np.zeros(10, int), batch_size=batch_size)


def npy_header_only(path, shape, tail=b""):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": shape})
        f.write(tail)


READ_ERRORS = [
    ("dir.npy", lambda p: p.mkdir(), r"dir.npy is a directory, not an image file"),
    ("text.npy", lambda p: p.write_text("index,class\n0,1\n"), r"text.npy: not an .npy array"),
    ("empty.npy", lambda p: p.write_bytes(b""), r"empty.npy: not an .npy array"),
    ("huge.npy", lambda p: npy_header_only(p, (2**40, 8, 8), b"\0" * 64),
     r"huge.npy: declares shape \(1099511627776, 8, 8\) of float32 \(281474976710656 bytes "
     r"of data\) but holds 64 bytes"),
    ("pickle.npy", lambda p: np.save(p, np.array([{}], dtype=object)),
     "pickle.npy: holds Python objects"),
    ("cut.npz", lambda p: p.write_bytes(_npz_bytes()[:100]), r"cut.npz: not an .npz archive"),
    ("crc.npz", lambda p: p.write_bytes(_npz_bytes().replace(b"\x07" * 8, b"\x08" * 8)),
     r"crc.npz: x: corrupt member \(BadZipFile: Bad CRC-32"),
    ("huge-idx.gz", lambda p: p.write_bytes(gzip.compress(struct.pack(">HBB3I", 0, 8, 3, 2**31,
                                                                     2**10, 2**10))),
     r"huge-idx.gz: header declares shape \(2147483648, 1024, 1024\) of uint8.*a gzip file of "
     r"\d+ bytes cannot hold that many"),
]


def _npz_bytes() -> bytes:
    import io

    f = io.BytesIO()
    np.savez(f, x=np.full((4, 8, 8), 7, np.uint8))
    return f.getvalue()


@pytest.mark.parametrize("name, make, match", READ_ERRORS, ids=[r[0] for r in READ_ERRORS])
def test_read_images_errors_name_the_file(tmp_path, name, make, match):
    """Before the fix: a directory was "not found", a text file named .npy gave a message
    about pickles without the file's name, a huge declared shape a MemoryError, a bad CRC or
    a truncated .npz a traceback, and a gzip IDX was decompressed whole before its header was
    read."""
    make(tmp_path / name)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            training.read_images(tmp_path / name)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()



@pytest.mark.skipif(not os.path.exists("/dev/null") or os.path.isfile("/dev/null"),
                    reason="needs a character device")
def test_a_device_is_not_a_regular_file_rather_than_not_found():
    """Before the fix: "image file not found: /dev/null" (io.load: "no such file"), which
    exists; every reader now says what it is."""
    from npconv import datasets, io, nn

    for read, what in ((training.read_images, "an image file"), (nn.load, "an npconv model "
                       "file"), (datasets.load_idx, "an IDX file"), (io.load, "a weights file")):
        with pytest.raises(ValueError, match=f"/dev/null is not a regular file \\(a device or "
                                             f"a pipe\\), not {what}"):
            read("/dev/null")
