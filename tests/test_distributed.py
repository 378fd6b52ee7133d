"""Data-parallel training on a real dask.distributed cluster: one step gives the whole batch's
gradients, a few epochs give the parameters of single-process training, runs are deterministic,
BatchNorm follows its documented per-shard rule, and `npconv train --scheduler` works (and
fails cleanly without dask).

One LocalCluster of two single-threaded worker processes on 127.0.0.1 serves the module; tests
that need it skip where dask / distributed are not installed (`pip install npconv[dask]`).
"""

import contextlib
import io
import re
import sys

import numpy as np
import pytest
from helpers import rel_err

from npconv import datasets, nn, training
from npconv import distributed as D
from npconv.cli import main


@pytest.fixture(scope="module")
def client():
    """A Client of a 2-process LocalCluster (loopback, no dashboard), closed at the end."""
    pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def plain_model(seed: int = 0, dtype: str = "float64") -> nn.Sequential:
    """Conv, ReLU, pools, Dense: no BatchNorm, no Dropout, so data parallelism is exact."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv(1, 4, (3, 3), padding="same", rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool(2),
        nn.Conv(4, 6, (3, 3), padding=1, rng=rng, dtype=dtype), nn.Tanh(), nn.AvgPool(2),
        nn.Flatten(), nn.Linear(24, 10, rng=rng, dtype=dtype))


def digits(n: int, dtype=np.float64):
    x, y = datasets.load_digits()                                # (1797, 8, 8, 1), (1797,)
    return x[:n].astype(dtype), y[:n]


def whole_batch(model, x, y):
    """Single-process loss and gradients of the batch (x, y)."""
    logits = model.forward(x, training=True)                     # (N, 10)
    value, dlogits = nn.softmax_cross_entropy(logits, y)
    model.backward(dlogits)
    return value, {k: g.copy() for k, g in model.grads.items()}


# ---------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [37, 1])                           # 19 + 18 rows; one empty shard
def test_one_step_gives_the_whole_batch_gradients(client, n):
    x, y = digits(n)
    value, grads = whole_batch(plain_model(), x, y)
    model = plain_model()
    result = D.data_parallel_step(model, x, y, client=client)
    assert sorted(result.grads) == sorted(grads) and result.n == n
    for k, g in grads.items():
        assert result.grads[k].dtype == np.float64 and rel_err(result.grads[k], g) < 1e-12, k
    assert result.loss == pytest.approx(value, rel=1e-12)
    assert result.correct == int((model.forward(x).argmax(axis=1) == y).sum())


def test_one_step_with_an_optimizer_updates_the_params_like_a_local_step(client):
    x, y = digits(40)
    local = plain_model()
    _, grads = whole_batch(local, x, y)
    nn.SGD(lr=0.1, momentum=0.9).step(local.params, grads)
    model = plain_model()
    D.data_parallel_step(model, x, y, client=client, optimizer=nn.SGD(lr=0.1, momentum=0.9))
    for k, p in local.params.items():
        assert rel_err(model.params[k], p) < 1e-12, k


def test_batchnorm_uses_per_shard_statistics(client):
    """The documented exception: the gradients are the share-weighted sum of each shard's own
    single-process gradients; the running mean is still that of the whole batch."""
    x, y = digits(30)                                            # shards of 15 and 15 rows

    def model():
        rng = np.random.default_rng(3)
        return nn.Sequential(nn.Conv(1, 4, (3, 3), rng=rng, dtype="float64"),
                             nn.BatchNorm(4, dtype="float64"), nn.ReLU(), nn.Flatten(),
                             nn.Linear(144, 10, rng=rng, dtype="float64"))

    shards = [whole_batch(model(), x[s], y[s]) for s in (slice(0, 15), slice(15, 30))]
    whole = model()
    whole_batch(whole, x, y)
    dp = model()
    result = D.data_parallel_step(dp, x, y, client=client)
    for k in result.grads:
        want = 0.5 * shards[0][1][k] + 0.5 * shards[1][1][k]
        assert rel_err(result.grads[k], want) < 1e-12, k
    assert rel_err(dp.buffers["1.running_mean"], whole.buffers["1.running_mean"]) < 1e-12
    assert rel_err(result.grads["0.weight"], whole.grads["0.weight"]) > 1e-6   # not the batch's


def test_a_residual_module_trains_data_parallel(client):
    """npconv.models' ResNet (a Module: rebuilt on the workers from its class and config):
    one step gives the share-weighted sum of the shards' own gradients (its batch norms use
    per-shard statistics), as for a Sequential."""
    from npconv import models

    x, y = digits(30)                                            # shards of 15 and 15 rows

    def model():
        return models.resnet18(num_classes=10, in_channels=1, width=2, dtype="float64",
                               rng=np.random.default_rng(4))

    shards = [whole_batch(model(), x[s], y[s]) for s in (slice(0, 15), slice(15, 30))]
    result = D.data_parallel_step(model(), x, y, client=client)
    assert sorted(result.grads) == sorted(shards[0][1])
    for k in result.grads:
        want = 0.5 * shards[0][1][k] + 0.5 * shards[1][1][k]
        assert rel_err(result.grads[k], want) < 1e-10, k


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def test_fit_equals_single_process_fit(client):
    x, y = digits(150)
    kwargs = dict(epochs=2, batch_size=32, validation=(x[:20], y[:20]),
                  augment=training.random_shift)                 # last batch: 22 rows
    local = plain_model()
    h1 = training.fit(local, x, y, optimizer=nn.Adam(lr=1e-2), rng=np.random.default_rng(5),
                      **kwargs)
    model, batches = plain_model(), []
    h2 = D.fit(model, x, y, client=client, optimizer=nn.Adam(lr=1e-2),
               rng=np.random.default_rng(5), on_batch=lambda *a: batches.append(a), **kwargs)
    for k, p in local.params.items():
        assert rel_err(model.params[k], p) < 1e-10, k
    np.testing.assert_allclose(h2.loss, h1.loss, rtol=1e-12)
    assert h2.accuracy == h1.accuracy and h2.val_accuracy == h1.val_accuracy
    assert len(batches) == 10 and batches[-1][:2] == (4, 5)


def test_fit_is_deterministic_with_batchnorm_and_dropout(client):
    x, y = digits(64, np.float32)

    def run(seed):
        rng = np.random.default_rng(0)
        model = nn.Sequential(nn.Conv(1, 4, (3, 3), rng=rng), nn.BatchNorm(4), nn.ReLU(),
                              nn.Flatten(), nn.Dropout(0.3), nn.Linear(144, 10, rng=rng))
        D.fit(model, x, y, client=client, optimizer=nn.Adam(), epochs=1, batch_size=16,
              rng=np.random.default_rng(1), seed=seed)
        return {**model.params, **model.buffers}

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["5.weight"], c["5.weight"])                # other dropout masks


def test_tree_sum_on_the_workers_equals_the_client_sum(client):
    parts = [{"loss": float(i), "grads": {"w": np.full(3, 0.1 * i)}} for i in range(5)]
    futures = client.scatter(parts, hash=False)
    total = D.tree_sum(client, futures, on_client=1)              # every level on the workers
    assert total["loss"] == 10.0 and np.allclose(total["grads"]["w"], 1.0)


def test_shard_sizes_follow_array_split():
    sizes = D.shard_sizes(103, 20, 3)                            # (6, 3)
    for b, row in enumerate(sizes):
        rows = np.arange(103)[20 * b:20 * (b + 1)]
        assert row.tolist() == [len(s) for s in np.array_split(rows, 3)]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, match", [
    ((-1, 4, 2), r"`n` must be an int >= 0; got -1"),
    ((10, 0, 2), r"`batch_size` must be an int >= 1; got 0"),
    ((10, 4, 1.0), r"`n_shards` must be an int >= 1; got 1.0"),
])
def test_shard_sizes_errors(args, match):
    with pytest.raises(ValueError, match=match):
        D.shard_sizes(*args)


@pytest.mark.parametrize("scheduler, match", [
    ("local:0", r"'local:N' needs N, the number of worker processes, to be an int >= 1; got "
                r"'local:0'"),
    ("local:two", r"got 'local:two'"),
    ("", r"`scheduler` must be 'local', 'local:N' or an address such as tcp://host:8786; "
         r"got ''"),
    (None, r"got None"),
])
def test_bad_scheduler(scheduler, match):
    with pytest.raises(ValueError, match=match), D.connect(scheduler):
        pass


def test_trainer_errors(client):
    x, y = digits(8)
    with pytest.raises(TypeError, match=r"`model` must be an npconv\.nn Layer; got str"):
        D.DataParallel("model", client)
    with pytest.raises(ValueError, match=r"`seed` must be an int >= 0; got -1"):
        D.DataParallel(plain_model(), client, seed=-1)
    with pytest.raises(ValueError, match=r"`threads` must be None or an int >= 1; got 0"):
        D.DataParallel(plain_model(), client, threads=0)

    class NoWorkers:
        def nthreads(self):
            return {}

    with pytest.raises(ValueError, match=r"`client` must be connected to a cluster with at "
                                         r"least one worker; got .* with 0 workers"):
        D.DataParallel(plain_model(), NoWorkers())
    trainer = D.DataParallel(plain_model(), client)
    with pytest.raises(ValueError, match=r"`y` must be an array of shape \(8,\), one label per "
                                         r"image; got \(7,\)"):
        trainer.place(x, y[:7], batch_size=4)
    with pytest.raises(TypeError, match="`x` must have dtype float16, float32 or float64"):
        trainer.place(x.astype(int), y, batch_size=4)
    placement = trainer.place(x, y, batch_size=4)
    with pytest.raises(ValueError, match=r"`b` must be a batch index in \[0, 2\); got 2"):
        trainer.gradients(placement, 2)
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1; got 0"):
        D.fit(plain_model(), x, y, client=client, optimizer=nn.SGD(), epochs=1, batch_size=0,
              rng=np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_cli_trains_on_the_cluster(client, tmp_path):
    address = client.scheduler.address
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--scheduler", address, "--epochs", "1", "--width", "8",
                     "--no-progress", "--out", str(tmp_path)])
    lines = stdout.getvalue().splitlines()
    assert code == 0 and (tmp_path / "model.npz").is_file()
    assert f"cluster: 2 workers, scheduler {address}" in lines
    assert re.fullmatch(r"test accuracy: \d\.\d{4}", lines[-1])


def test_cli_without_dask_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)        # import distributed fails
    assert main(["train", "--scheduler", "local:2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--scheduler needs dask.distributed" in err and "pip install 'npconv[dask]'" in err
    assert not (tmp_path / "model.npz").exists()


def test_cli_bad_scheduler_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--scheduler", "local:0"])
    assert exit_info.value.code == 2
    assert "argument --scheduler: `scheduler` 'local:N' needs N" in capsys.readouterr().err
