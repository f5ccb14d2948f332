"""Make the two shipped sample data sets and train their models, deterministically.

Run from a source checkout::

    python sample_data/make_samples.py

It writes, next to this file:

- ``digits.npz``, ``shapes.npz``: images (uint8) with their ``scale`` (pixel value
  of 1.0), labels, class names, and a stratified train/test split. The test
  indices are never used for training or for choosing anything.
- ``digits_cnn.pt``, ``shapes_cnn.pt``: plain state dicts of the models in
  :mod:`napari_topolens.sample_models`.
- ``README.md``: what the data are, the layers, the held-out accuracies in a fixed
  ``| name | accuracy | ...`` table, and how long the run took.

The shapes generator (:func:`generate_shapes`) needs only numpy, so tests can import
this file and check that it reproduces the stored images.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

HERE = Path(__file__).resolve().parent

SHAPE_CLASSES = ("disk", "ring", "two_disks", "cross", "square_frame", "bars")
SHAPES_SEED = 20240611
SHAPES_PER_CLASS = 200
SHAPES_SIZE = 48
SPLIT_SEED = 0
TEST_FRACTION = 0.2
TRAIN_SEED = 0
THREADS = 1

# Training recipe per sample. The shapes are augmented with flips and quarter
# turns (no class changes under them); without that the model overfits (0.93).
RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4, "augment": False},
    "shapes": {"epochs": 20, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4, "augment": True},
}


# --------------------------------------------------------------------------- shapes
def _box_sdf(px: np.ndarray, py: np.ndarray, half_x: float, half_y: float) -> np.ndarray:
    """Signed distance to an axis-aligned box centred at the origin."""
    qx = np.abs(px) - half_x
    qy = np.abs(py) - half_y
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside


def _rotate(px: np.ndarray, py: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * px + s * py, -s * px + c * py


def _shape_sdf(
    kind: str, rng: np.random.Generator
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], float]:
    """Draw one shape's parameters; return its signed distance function and radius.

    The radius bounds the shape around its centre, so the centre can be placed with
    the whole shape inside the image.
    """
    if kind == "disk":
        r = rng.uniform(5.0, 14.0)
        return (lambda px, py: np.hypot(px, py) - r), r
    if kind == "ring":
        r = rng.uniform(7.0, 16.0)
        t = rng.uniform(2.0, 4.5)
        return (lambda px, py: np.abs(np.hypot(px, py) - r) - t / 2), r + t / 2
    if kind == "two_disks":
        r1, r2 = rng.uniform(3.5, 8.0, size=2)
        gap = rng.uniform(3.0, 10.0)
        angle = rng.uniform(0.0, np.pi)
        d = r1 + r2 + gap
        ux, uy = np.cos(angle), np.sin(angle)
        # centres on the axis, with the pair's midpoint at the origin
        a1, a2 = -d / 2, d / 2

        def two_disks(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            d1 = np.hypot(px - a1 * ux, py - a1 * uy) - r1
            d2 = np.hypot(px - a2 * ux, py - a2 * uy) - r2
            return np.minimum(d1, d2)

        return two_disks, d / 2 + max(r1, r2)
    if kind == "cross":
        arm = rng.uniform(7.0, 16.0)
        half_t = rng.uniform(1.2, 3.0)
        angle = rng.uniform(0.0, np.pi / 2)

        def cross(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            qx, qy = _rotate(px, py, angle)
            return np.minimum(_box_sdf(qx, qy, arm, half_t), _box_sdf(qx, qy, half_t, arm))

        return cross, float(np.hypot(arm, half_t))
    if kind == "square_frame":
        half = rng.uniform(7.0, 15.0)
        t = rng.uniform(2.0, 4.0)
        angle = rng.uniform(0.0, np.pi / 2)

        def frame(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            qx, qy = _rotate(px, py, angle)
            return np.abs(_box_sdf(qx, qy, half - t / 2, half - t / 2)) - t / 2

        return frame, half * np.sqrt(2.0)
    if kind == "bars":
        n_bars = int(rng.integers(2, 4))
        length = rng.uniform(8.0, 16.0)
        half_t = rng.uniform(1.2, 2.5)
        spacing = 2 * half_t + rng.uniform(3.0, 7.0)
        angle = rng.uniform(0.0, np.pi)
        offsets = (np.arange(n_bars) - (n_bars - 1) / 2) * spacing

        def bars(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            qx, qy = _rotate(px, py, angle)
            return np.min([_box_sdf(qx, qy - o, length, half_t) for o in offsets], axis=0)

        return bars, float(np.hypot(length, offsets[-1] + half_t))
    raise ValueError(f"unknown shape {kind!r}; known: {SHAPE_CLASSES}")


def generate_shapes(
    n_images: int = SHAPES_PER_CLASS * len(SHAPE_CLASSES),
    size: int = SHAPES_SIZE,
    seed: int = SHAPES_SEED,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Draw grayscale images of shapes whose topology is known by construction.

    Image ``i`` shows class ``i % 6``: disk (one component, no hole), ring (one
    component, one hole), two disks (two components), cross (one component, no
    hole, four arms), square frame (one component, one hole) and bars (two or three
    parallel bars). Position, size, thickness, rotation, foreground and background
    intensity and Gaussian noise are random. Images are drawn one after another from
    one generator, so the first ``k`` images do not depend on ``n_images``.

    Parameters
    ----------
    n_images : int
        Number of images.
    size : int
        Height and width in pixels.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    images : ndarray, shape (n_images, size, size), uint8
        Pixel values 0..255 (255 is 1.0).
    labels : ndarray, shape (n_images,), int64
    class_names : list of str
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    images = np.empty((n_images, size, size), dtype=np.uint8)
    labels = np.arange(n_images, dtype=np.int64) % len(SHAPE_CLASSES)
    for i, label in enumerate(labels):
        sdf, radius = _shape_sdf(SHAPE_CLASSES[label], rng)
        low, high = radius + 1.0, size - 2.0 - radius
        cy, cx = rng.uniform(low, high, size=2) if low < high else ((size - 1) / 2,) * 2
        foreground = rng.uniform(0.55, 1.0)
        background = rng.uniform(0.0, 0.2)
        noise_sigma = rng.uniform(0.02, 0.08)
        # one pixel of anti-aliasing: coverage goes from 1 inside to 0 outside
        coverage = np.clip(0.5 - sdf(xx - cx, yy - cy), 0.0, 1.0)
        image = background + (foreground - background) * coverage
        image += rng.normal(0.0, noise_sigma, size=(size, size))
        images[i] = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, labels, list(SHAPE_CLASSES)


# --------------------------------------------------------------------------- data sets
def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices, ``TEST_FRACTION`` of each class held out."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels), dtype=np.int64)
    train, test = train_test_split(
        index, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def make_digits() -> dict[str, np.ndarray]:
    """The scikit-learn digits (bundled with scikit-learn) as stored arrays."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # integer counts 0..16
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels)
    return {
        "images": images,
        "scale": np.array(16.0),
        "labels": labels,
        "class_names": np.array([str(n) for n in bunch.target_names], dtype=np.str_),
        "train_index": train,
        "test_index": test,
    }


def make_shapes() -> dict[str, np.ndarray]:
    """The procedural shapes as stored arrays."""
    images, labels, class_names = generate_shapes()
    train, test = stratified_split(labels)
    return {
        "images": images,
        "scale": np.array(255.0),
        "labels": labels,
        "class_names": np.array(class_names, dtype=np.str_),
        "train_index": train,
        "test_index": test,
        "seed": np.array(SHAPES_SEED, dtype=np.int64),
    }


# --------------------------------------------------------------------------- training
@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int = THREADS) -> Iterator[None]:
    """Seed torch, demand deterministic kernels and fix the thread count; restore after."""
    import torch

    old_flag = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_flag)
        torch.set_num_threads(old_threads)


def train_model(
    factory: Callable[[], nn.Module],
    images: np.ndarray,
    labels: np.ndarray,
    train_index: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    augment: bool = False,
    seed: int = TRAIN_SEED,
    max_steps: int | None = None,
) -> nn.Module:
    """Train ``factory()`` on ``images[train_index]`` with AdamW and a cosine schedule.

    There is no model selection: the weights after the last epoch are kept, so the
    held-out images play no part. ``augment`` applies a random flip and quarter
    turn to each batch (for classes that do not change under them, as the shapes).
    ``max_steps`` stops early (for quick checks).

    Parameters
    ----------
    images : ndarray, shape (N, H, W), float32 in [0, 1]
    labels : ndarray, shape (N,), int64

    Returns
    -------
    torch.nn.Module
        The trained model, in eval mode.
    """
    import torch
    from torch import nn

    with deterministic_torch(seed):
        model = factory()
        x = torch.from_numpy(np.ascontiguousarray(images[train_index], dtype=np.float32))[:, None]
        y = torch.from_numpy(labels[train_index].astype(np.int64))
        steps_per_epoch = -(-len(x) // batch_size)
        total_steps = epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.2
        )
        loss_fn = nn.CrossEntropyLoss()
        shuffle = torch.Generator().manual_seed(seed)
        model.train()
        step = 0
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=shuffle)
            for start in range(0, len(x), batch_size):
                batch = order[start : start + batch_size]
                inputs = x[batch]
                if augment:
                    turns, flip = torch.randint(0, 4, (2,), generator=shuffle).tolist()
                    inputs = torch.rot90(inputs, turns, dims=(2, 3))
                    if flip % 2:
                        inputs = torch.flip(inputs, dims=(3,))
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(inputs), y[batch])
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if max_steps is not None and step >= max_steps:
                    return model.eval()
        return model.eval()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> float:
    """Fraction of ``images[index]`` the model classifies right (one batch, eval mode)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images[index], dtype=np.float32))[:, None]
    with torch.no_grad():
        predicted = model.eval()(x).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels[index]))


def _package_modules() -> tuple[Any, Any]:
    """Import ``sample_models`` and ``samples``, from ``src/`` if not installed."""
    try:
        import napari_topolens.sample_models as sample_models
    except ImportError:
        sys.path.insert(0, str(HERE.parent / "src"))
        import napari_topolens.sample_models as sample_models
    import napari_topolens.samples as samples

    return sample_models, samples


# --------------------------------------------------------------------------- README
README_TEMPLATE = """\
# Sample data

Two small data sets ship with napari-topolens, each with a trained plain-torch CNN,
so that every feature can be tried offline: `napari_topolens.load_sample("digits")`
or `load_sample("shapes")`. Everything here is made by `make_samples.py`
(deterministic; do not edit these files by hand).

## Held-out accuracy

The test split (stratified, {test_percent} % of each class, split seed {split_seed}) is never
used for training or for choosing anything; the weights after the last epoch are kept.

| sample | test accuracy | test images | train images | train seconds |
|---|---|---|---|---|
{accuracy_rows}

## digits

{digits_description}
Source: `sklearn.datasets.load_digits()`, bundled with scikit-learn (no download):
real scans, pixel counts 0..16 stored as uint8 with `scale = 16` (images are
`images / scale` in [0, 1]). Classes: {digits_classes}.

Model `napari_topolens.sample_models:digits_cnn` (weights `digits_cnn.pt`):

```
{digits_model}
```

Default layers analysed: {digits_layers}.

## shapes

{shapes_description}
Drawn by `generate_shapes()` in `make_samples.py` (seed {shapes_seed}): image `i` is of class `i % 6`, with random position, size,
thickness, rotation, foreground/background intensity and Gaussian noise; stored as
uint8 with `scale = 255`. The topology is known by construction:

| class | components | holes |
|---|---|---|
| disk | 1 | 0 |
| ring | 1 | 1 |
| two_disks | 2 | 0 |
| cross | 1 | 0 |
| square_frame | 1 | 1 |
| bars | 2 or 3 | 0 |

Model `napari_topolens.sample_models:shapes_cnn` (weights `shapes_cnn.pt`):

```
{shapes_model}
```

Default layers analysed: {shapes_layers}.

## Files

Each `.npz` holds `images` (uint8, (N, H, W)), `scale`, `labels` (int64),
`class_names` (unicode), `train_index` and `test_index` (int64, sorted, disjoint);
no pickled objects. Each `.pt` is a plain `state_dict` (load with
`torch.load(..., weights_only=True)`).

## Regenerate

```
python sample_data/make_samples.py
```

Training recipe (AdamW, one-cycle schedule, torch seed {train_seed},
`torch.use_deterministic_algorithms(True)`, {threads} torch thread): {recipes}.
A rerun on the same machine and torch version gives the same arrays and weights.

Last run: {total_seconds:.1f} s in total (data, training and saving; budget 180 s)
on {machine}, torch {torch_version}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: here)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    import torch

    sample_models, samples = _package_modules()
    factories = {"digits": sample_models.digits_cnn, "shapes": sample_models.shapes_cnn}
    makers = {"digits": make_digits, "shapes": make_shapes}

    started = time.perf_counter()
    rows, models = [], {}
    for name in ("digits", "shapes"):
        arrays = makers[name]()
        np.savez_compressed(out / f"{name}.npz", **arrays)
        images = arrays["images"].astype(np.float32) / np.float32(arrays["scale"])
        recipe = RECIPES[name]
        t0 = time.perf_counter()
        model = train_model(
            factories[name],
            images,
            arrays["labels"],
            arrays["train_index"],
            epochs=int(recipe["epochs"]),
            batch_size=int(recipe["batch_size"]),
            lr=recipe["lr"],
            weight_decay=recipe["weight_decay"],
            augment=bool(recipe["augment"]),
        )
        seconds = time.perf_counter() - t0
        torch.save(model.state_dict(), out / f"{name}_cnn.pt")
        acc = accuracy(model, images, arrays["labels"], arrays["test_index"])
        print(f"{name}: test accuracy {acc:.4f} after {seconds:.1f} s of training")
        rows.append(
            f"| {name} | {acc:.4f} | {len(arrays['test_index'])} "
            f"| {len(arrays['train_index'])} | {seconds:.1f} |"
        )
        models[name] = (model, [str(c) for c in arrays["class_names"]])
    total = time.perf_counter() - started

    readme = README_TEMPLATE.format(
        test_percent=round(TEST_FRACTION * 100),
        split_seed=SPLIT_SEED,
        accuracy_rows="\n".join(rows),
        digits_description=samples.DESCRIPTIONS["digits"],
        digits_classes=", ".join(models["digits"][1]),
        digits_model=str(models["digits"][0]),
        digits_layers=", ".join(f"`{n}`" for n in samples.DEFAULT_LAYERS["digits"]),
        shapes_description=samples.DESCRIPTIONS["shapes"],
        shapes_seed=SHAPES_SEED,
        shapes_model=str(models["shapes"][0]),
        shapes_layers=", ".join(f"`{n}`" for n in samples.DEFAULT_LAYERS["shapes"]),
        train_seed=TRAIN_SEED,
        threads=THREADS,
        recipes="; ".join(
            f"{n}: {int(r['epochs'])} epochs, batch {int(r['batch_size'])}, lr {r['lr']:g}, "
            f"weight decay {r['weight_decay']:g}"
            + (", random flips and quarter turns" if r["augment"] else "")
            for n, r in RECIPES.items()
        ),
        total_seconds=total,
        machine=f"{platform.machine()} CPU, {os.cpu_count()} cores",
        torch_version=torch.__version__,
    )
    (out / "README.md").write_text(readme, encoding="utf-8")
    print(f"total {total:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
