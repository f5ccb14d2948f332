"""Issue 19: the public API given the wrong kind of argument, one table.

Each row calls an entry point (perturb, compare, run_variants and the variant
helpers, the analysis, the store, the activation cache) with an argument of the
wrong type; each must be a project error naming the argument, never a raw
TypeError/AttributeError from deep inside, and never a silent misreading.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_topolens.activations.cache import ActivationCache
from napari_topolens.errors import TopoLensError
from napari_topolens.pipeline import iter_one_variant, run_variants
from napari_topolens.robustness.comparison import compare
from napari_topolens.robustness.perturbations import perturb
from napari_topolens.robustness.study import VariantSpec, parse_variants, variant_inputs
from napari_topolens.topology.analysis import analyze
from napari_topolens.topology.store import load_analysis, save_analysis

IMAGES = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten()).eval()


def _variants(**kw):
    call = {"model": _net(), "images": IMAGES, "layers": ["0"], "variants": ["gaussian:0.1"]}
    call.update(kw)
    return run_variants(**call)


# id: (the call, the error's message)
MISUSE = {
    "perturb(kind=['gaussian'])": (lambda t: perturb(IMAGES, ["gaussian"], 0.1), "unknown pert"),
    "perturb(seed='x')": (lambda t: perturb(IMAGES, "gaussian", 0.1, seed="x"), "seed must be a"),
    "perturb(seed=1.5)": (lambda t: perturb(IMAGES, "gaussian", 0.1, seed=1.5), "seed must be a"),
    "perturb(seed=None)": (lambda t: perturb(IMAGES, "gaussian", 0.1, seed=None), "seed must be"),
    "perturb(batch_size=None)": (
        lambda t: perturb(IMAGES, "fgsm", 0.1, model=_net(), batch_size=None),
        "batch_size must be a whole number",
    ),
    "perturb(model='net')": (
        lambda t: perturb(IMAGES, "fgsm", 0.1, model="net"),
        "model must be a torch.nn.Module, got str",
    ),
    "compare(None, None)": (lambda t: compare(None, None), "base must be an Analysis"),
    "compare(images, images)": (lambda t: compare(IMAGES, IMAGES), "got ndarray"),
    "run_variants(model=None)": (lambda t: _variants(model=None), "got NoneType"),
    "run_variants(model='net')": (lambda t: _variants(model="net"), "Module, got str"),
    "run_variants(layers=5)": (lambda t: _variants(layers=5), "layers must be a layer name"),
    "run_variants(variants=5)": (lambda t: _variants(variants=5), "variants must be a spec"),
    "run_variants(variants={'a': 1})": (lambda t: _variants(variants={"a": 1}), "got dict"),
    "run_variants(labels=5)": (lambda t: _variants(labels=5), "labels must be one integer"),
    "run_variants(labels='01234')": (lambda t: _variants(labels="01234"), "got str"),
    "run_variants(class_names='ab')": (
        lambda t: _variants(labels=np.arange(5) % 2, class_names="ab"),
        "not one string",
    ),
    "run_variants(seed='x')": (lambda t: _variants(seed="x"), "seed must be a whole number"),
    "run_variants(config={})": (lambda t: _variants(config={}), "config must be an Analysis"),
    "run_variants(base='x')": (lambda t: _variants(base="x"), "base must be an Analysis"),
    "run_variants(provenance=[1])": (lambda t: _variants(provenance=[1]), "provenance must"),
    "variant_inputs('gaussian:0.1', ...)": (
        lambda t: variant_inputs("gaussian:0.1", _net(), IMAGES),
        "spec must be a VariantSpec",
    ),
    "iter_one_variant(None, ...)": (
        lambda t: next(iter_one_variant(None, _net(), IMAGES, None, extract=None, analyse=None)),
        "spec must be a VariantSpec",
    ),
    "parse_variants(5)": (lambda t: parse_variants(5), "perturb must be text"),
    "parse_variants(seed='x')": (lambda t: parse_variants("gaussian:1", seed="x"), "seed must"),
    "VariantSpec(strength='x')": (
        lambda t: VariantSpec(perturbation="gaussian", strength="x"),
        "strength must be a number",
    ),
    "VariantSpec(perturbation=['gaussian'])": (
        lambda t: VariantSpec(perturbation=["gaussian"], strength=0.1),
        "perturbation must be a name",
    ),
    "VariantSpec(prune='x')": (lambda t: VariantSpec(prune="x"), "prune must be a number"),
    "analyze(config={})": (lambda t: analyze([], config={}), "config must be an AnalysisConfig"),
    "save_analysis(None, folder)": (
        lambda t: save_analysis(None, t / "a"),
        "analysis must be an Analysis, got NoneType",
    ),
    "load_analysis(None)": (lambda t: load_analysis(None), "path must be a folder"),
    "load_analysis(5)": (lambda t: load_analysis(5), "path must be a folder"),
    "load_analysis(expected='x')": (
        lambda t: load_analysis(t, expected="x"),
        "expected must be a class",
    ),
    "ActivationCache(None)": (lambda t: ActivationCache(None), "cache folder must be a path"),
    "ActivationCache(5)": (lambda t: ActivationCache(5), "cache folder must be a path"),
}


@pytest.mark.parametrize("case", list(MISUSE))
def test_api_misuse_is_a_project_error_naming_the_argument(case, tmp_path) -> None:
    call, message = MISUSE[case]
    with pytest.raises(TopoLensError, match=message):
        call(tmp_path)
    assert not (tmp_path / "a").exists()  # nothing written by a refused save
