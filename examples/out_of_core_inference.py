"""Out-of-core inference: predict the digits of an image file larger than the memory allowed.

Run it from the repository root (tqdm, when installed, draws the progress bars):

    python examples/out_of_core_inference.py                    # 256 MB of images, temp dir
    python examples/out_of_core_inference.py --size-mb 1024 --workspace-mb 32 --dir /scratch

What it does:

1. Model: `--model PATH`, by default runs/digits/model.npz (written by `npconv train`) when it
   exists; otherwise it trains a small CNN on the built-in digits for a few seconds.
2. Data: writes `--size-mb` megabytes of digit-like 8x8 float32 images (the built-in digits,
   shifted by up to one pixel, plus Gaussian noise) to DIR/images.npy, 256 bytes per image, and
   their labels to DIR/labels.npy. The file is written chunk by chunk through memory maps, so
   it never exists in memory as a whole.
3. Inference: `npconv.distributed.predict_to_disk` reads `chunk_size` images at a time through
   a fresh memory map, predicts them in batches of 512 and writes the classes (int64) to
   DIR/predictions.npy through another memory map. The workspace (`--workspace-mb`, 64 MB by
   default) bounds one chunk: its images as mapped from the file and as copied to float32
   (2 x 256 bytes), its logits and its classes (twice each, while they are joined and
   written): 608 bytes per image. Python, NumPy and the forward pass of one batch of 512
   images come on top (about 30 MB for the demo CNN).
4. Report: images per second, accuracy against the labels, and the peak resident memory of the
   process while it predicts (Python and NumPy included), which stays far below the size of
   the file.

Without `--dir` the files go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from npconv import datasets, nn, training
from npconv.distributed import predict_to_disk

IMAGE_SHAPE = (8, 8, 1)
IMAGE_BYTES = 8 * 8 * 4                      # one float32 image
BYTES_PER_IMAGE = 2 * IMAGE_BYTES + 2 * 10 * 4 + 2 * 8   # mapped + copy, logits, class
DEFAULT_MODEL = Path("runs/digits/model.npz")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=256.0,
                        help="size of the generated image file in MB (256)")
    parser.add_argument("--workspace-mb", type=float, default=64.0,
                        help="memory for one chunk of images and its outputs, in MB (64)")
    parser.add_argument("--dir", default=None,
                        help="directory for images.npy, labels.npy, predictions.npy "
                             "(default: a temporary directory, removed at the end)")
    parser.add_argument("--model", default=None,
                        help=f"model file (default: {DEFAULT_MODEL} if present, else train one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.workspace_mb <= 0:
        parser.error(f"--size-mb and --workspace-mb must be > 0; got {args.size_mb} and "
                     f"{args.workspace_mb}")
    return args


def load_or_train(path) -> nn.Layer:
    """The model at `path` (or the default file); else a small CNN trained for a few seconds."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if path.is_file():
        print(f"model: {path}")
        return nn.load(path)
    if path != DEFAULT_MODEL:
        raise SystemExit(f"model file not found: {path}")
    print("model: no runs/digits/model.npz; training a small CNN on the built-in digits")
    split_rng, init_rng, order_rng = training.seed_streams(0)
    data = training.load_data(rng=split_rng)
    model = training.digits_cnn(rng=init_rng, width=8)
    training.fit(model, data.x_train, data.y_train, optimizer=nn.Adam(lr=5e-3), epochs=5,
                 batch_size=64, rng=order_rng, augment=training.random_shift)
    return model


def create_npy(path: Path, dtype, shape) -> None:
    """An .npy of zeros of that shape on disk (sparse where the file system allows)."""
    out = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    del out                                                      # unmapped; the file stays


def write_images(directory: Path, n: int, chunk_size: int, seed: int, bar) -> tuple[Path, Path]:
    """n digit-like images (n, 8, 8, 1) float32 and their labels (n,), chunk by chunk."""
    digits, labels = datasets.load_digits()                       # (1797, 8, 8, 1), (1797,)
    rng = np.random.default_rng(seed)
    images, label_path = directory / "images.npy", directory / "labels.npy"
    create_npy(images, np.float32, (n, *IMAGE_SHAPE))
    create_npy(label_path, np.uint8, (n,))
    for a in range(0, n, chunk_size):
        pick = rng.integers(0, len(labels), size=min(chunk_size, n - a))   # (c,)
        x = training.random_shift(digits[pick], rng)                       # (c, 8, 8, 1)
        x += 0.05 * rng.standard_normal(x.shape, dtype=np.float32)
        np.clip(x, 0, 1, out=x)
        for path, rows in ((images, x), (label_path, labels[pick].astype(np.uint8))):
            out = open_memmap(path, mode="r+")        # a fresh map per chunk: bounded memory
            out[a:a + len(rows)] = rows
            out.flush()
            del out
        bar(a + len(pick), n)
    return images, label_path


def progress(desc: str, total: int, enabled: bool):
    """A callback (done, total) drawing a tqdm bar, and its close(); no-ops without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return lambda done, total: None, lambda: None
    bar = tqdm(desc=desc, total=total, unit="img", unit_scale=True, file=sys.stderr)

    def update(done, total):
        bar.update(done - bar.n)

    return update, bar.close


def reset_peak_rss() -> None:
    """Restart the peak-memory count (Linux: /proc/self/clear_refs; elsewhere a no-op)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux; NaN elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 1e6
    except (OSError, IndexError, ValueError):
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process since `reset_peak_rss`, in MB (VmHWM on Linux;
    elsewhere the peak of the whole run)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024 / 1e6        # kB
    except (OSError, IndexError, ValueError):
        import resource  # Unix only

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def run(args, directory: Path) -> dict:
    model = load_or_train(args.model)
    n = max(1, int(args.size_mb * 1e6) // IMAGE_BYTES)
    chunk_size = max(1, int(args.workspace_mb * 1e6) // BYTES_PER_IMAGE)
    print(f"images: {n} of 8x8 float32 = {n * IMAGE_BYTES / 1e6:.1f} MB in {directory}; "
          f"chunks of {chunk_size} images ({args.workspace_mb:g} MB workspace)")
    update, close = progress("writing", n, not args.no_progress)
    images, labels = write_images(directory, n, chunk_size, args.seed, update)
    close()
    update, close = progress("predicting", n, not args.no_progress)
    reset_peak_rss()
    before = rss_mb()
    start = time.perf_counter()
    predictions = predict_to_disk(model, images, directory / "predictions.npy",
                                  chunk_size=chunk_size, on_chunk=update)
    seconds = time.perf_counter() - start
    close()
    peak = peak_rss_mb()
    hits = np.count_nonzero(np.load(predictions, mmap_mode="r") == np.load(labels, mmap_mode="r"))
    print(f"predicted {n} images in {seconds:.1f}s: {n / seconds:.0f} images/s, "
          f"{n * IMAGE_BYTES / 1e6 / seconds:.1f} MB/s")
    print(f"peak resident memory while predicting: {peak:.0f} MB, {before:.0f} MB of it "
          f"before the first chunk (Python, NumPy, the model); the file is "
          f"{n * IMAGE_BYTES / 1e6:.0f} MB")
    print(f"accuracy on the generated digits: {hits / n:.4f}")
    return dict(n=n, seconds=seconds, accuracy=hits / n, peak_mb=peak, chunk_size=chunk_size)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dir is not None:
        directory = Path(args.dir)
        directory.mkdir(parents=True, exist_ok=True)
        run(args, directory)
        return 0
    with tempfile.TemporaryDirectory(prefix="npconv-ooc-") as tmp:
        run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
