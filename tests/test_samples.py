"""The shipped samples: data, trained models, README figures and the generator."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_topolens.errors import TopoLensError  # noqa: E402
from napari_topolens.sample_models import Normalize  # noqa: E402
from napari_topolens.samples import SAMPLE_NAMES, Sample, load_sample, sample_data_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sample_data" / "make_samples.py"
EXPECTED = {
    # name: (N, H, W, number of classes)
    "digits": (1797, 8, 8, 10),
    "shapes": (1200, 48, 48, 6),
}


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_samples_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module", params=SAMPLE_NAMES)
def sample(request: pytest.FixtureRequest) -> Sample:
    return load_sample(request.param)


def _readme_accuracies() -> dict[str, str]:
    text = (sample_data_dir() / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \| (\d\.\d{4}) \|", text, flags=re.MULTILINE)
    return dict(rows)


def _test_accuracy(s: Sample) -> float:
    x = torch.from_numpy(s.images[s.test_index])[:, None]
    with torch.no_grad():
        predicted = s.model(x).argmax(dim=1).numpy()
    return float(np.mean(predicted == s.labels[s.test_index]))


def test_sample_names() -> None:
    assert SAMPLE_NAMES == ("digits", "shapes")


def test_arrays_have_documented_shapes_dtypes_and_ranges(sample: Sample) -> None:
    n, h, w, n_classes = EXPECTED[sample.name]
    assert sample.images.shape == (n, h, w)
    assert sample.images.dtype == np.float32
    assert float(sample.images.min()) >= 0.0 and float(sample.images.max()) <= 1.0
    assert float(sample.images.max()) == 1.0  # scaled by the stored scale, not by 255 blindly
    assert sample.labels.shape == (n,) and sample.labels.dtype == np.int64
    assert len(sample.class_names) == n_classes
    assert all(isinstance(c, str) for c in sample.class_names)
    assert set(np.unique(sample.labels)) == set(range(n_classes))
    assert sample.test_index.dtype == np.int64 and sample.train_index.dtype == np.int64
    assert isinstance(sample.description, str) and sample.description.endswith(".")


def test_split_is_disjoint_complete_and_stratified(sample: Sample) -> None:
    train, test = sample.train_index, sample.test_index
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.union1d(train, test), np.arange(len(sample.labels)))
    assert abs(len(test) / len(sample.labels) - 0.2) < 0.01
    per_class_test = np.bincount(sample.labels[test]) / np.bincount(sample.labels)
    assert np.all(np.abs(per_class_test - 0.2) < 0.03)


def test_model_is_eval_normalising_and_has_default_layers(sample: Sample) -> None:
    model = sample.model
    assert isinstance(model, torch.nn.Module)
    assert not any(m.training for m in model.modules())
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize" and isinstance(first, Normalize)
    names = dict(model.named_modules())
    assert sample.default_layers
    for layer in sample.default_layers:
        assert layer in names, f"{layer} not in the model"
    convs = [n for n, m in names.items() if isinstance(m, torch.nn.Conv2d)]
    pools = [n for n in sample.default_layers if n.startswith("pool")]
    assert len(pools) == len(convs)  # every conv stage's output is analysed
    assert sample.default_layers[-1] == "fc1"
    with torch.no_grad():
        logits = model(torch.from_numpy(sample.images[:4])[:, None])
    assert logits.shape == (4, len(sample.class_names))


def test_accuracy_on_held_out_images_matches_readme(sample: Sample) -> None:
    acc = _test_accuracy(sample)
    assert acc >= 0.95
    readme = _readme_accuracies()
    assert sample.name in readme, "README.md lacks the accuracy row"
    assert f"{acc:.4f}" == readme[sample.name]


def test_each_load_gives_a_fresh_model() -> None:
    a, b = load_sample("digits"), load_sample("digits")
    assert a.model is not b.model
    with torch.no_grad():
        a.model.fc2.weight.zero_()
        assert float(b.model.fc2.weight.abs().sum()) > 0


def test_digits_are_the_scikit_learn_digits() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    s = load_sample("digits")
    np.testing.assert_array_equal(s.images * 16, bunch.images.astype(np.float32))
    np.testing.assert_array_equal(s.labels, bunch.target)


def test_shapes_generator_reproduces_stored_images(script: ModuleType) -> None:
    images, labels, class_names = script.generate_shapes(n_images=12, seed=script.SHAPES_SEED)
    with np.load(sample_data_dir() / "shapes.npz", allow_pickle=False) as stored:
        np.testing.assert_array_equal(images, stored["images"][:12])
        np.testing.assert_array_equal(labels, stored["labels"][:12])
        assert class_names == [str(c) for c in stored["class_names"]]
        assert int(stored["seed"]) == script.SHAPES_SEED
    other, _, _ = script.generate_shapes(n_images=12, seed=script.SHAPES_SEED + 1)
    assert not np.array_equal(images, other)


def test_training_is_deterministic(script: ModuleType) -> None:
    from napari_topolens.sample_models import shapes_cnn

    s = load_sample("shapes")
    subset = s.train_index[:96]

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = script.train_model(
            shapes_cnn,
            s.images,
            s.labels,
            subset,
            epochs=1,
            batch_size=32,
            lr=3e-3,
            weight_decay=1e-4,
            augment=True,
            seed=seed,
            max_steps=3,
        )
        return model.state_dict()

    threads_before = torch.get_num_threads()
    first, second, other = run(0), run(0), run(1)
    assert torch.get_num_threads() == threads_before  # the script restores global state
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_unknown_name_raises_and_names_the_samples() -> None:
    with pytest.raises(TopoLensError, match="digits, shapes"):
        load_sample("cifar10")


def test_missing_files_raise_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import napari_topolens.samples as samples

    monkeypatch.setattr(samples, "sample_data_dir", lambda: tmp_path)
    with pytest.raises(TopoLensError, match="make_samples.py"):
        samples.load_sample("shapes")


def test_importing_samples_does_not_import_torch() -> None:
    code = (
        "import sys; import napari_topolens.samples; sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr or "torch was imported"
