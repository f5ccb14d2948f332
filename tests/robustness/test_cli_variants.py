"""`napari-topolens report --perturb ... --compress ... --mask ...`: robustness section and saved variants."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from napari_topolens import cli, load_sample
from napari_topolens.robustness.study import Variant
from napari_topolens.topology.store import load_analysis

FAST = ["--h1-max-points", "80", "--quiet", "--max-images", "150"]


def _run(args: list[str]) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(["report", *args])
    return code, stderr.getvalue()


@pytest.fixture(scope="module")
def variant_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("variants") / "digits"
    code, err = _run(
        [
            "--sample",
            "digits",
            "--layers",
            "pool1,fc1",
            "--sampling",
            "top_norm",
            "--perturb",
            "gaussian:0.1,fgsm:0.05",
            "--compress",
            "prune:0.5+int8",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0, err
    return out


def test_report_has_a_robustness_section_and_saves_the_variants(variant_report):
    page = (variant_report / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="robustness">(.*?)</section>', page, re.S)
    assert section is not None and 'href="#robustness"' in page
    body = section.group(1)
    for name in ("gaussian:0.1", "fgsm:0.05", "prune:0.5+int8"):
        assert f"<code>{name}</code>" in body
    assert body.count('src="data:image/png;base64,') == 2  # drift plot, most-moved images
    analysis = load_analysis(variant_report / "analysis")
    assert [v.name for v in analysis.variants] == ["gaussian:0.1", "fgsm:0.05", "prune:0.5+int8"]
    assert all(isinstance(v, Variant) for v in analysis.variants)
    fgsm = analysis.variants[1].comparison
    assert fgsm.accuracy_variant < fgsm.accuracy_base
    assert analysis.variants[0].analysis.images.shape == analysis.images.shape
    assert "variants" in analysis.provenance["seconds"]


def test_foreground_sampling_from_a_mask_file(tmp_path):
    sample = load_sample("shapes")
    masks = sample.images > 0.5  # the bright shapes themselves
    np.save(tmp_path / "masks.npy", masks)
    out = tmp_path / "report"
    code, err = _run(
        [
            "--sample",
            "shapes",
            "--layers",
            "pool2,fc1",
            "--sampling",
            "foreground",
            "--mask",
            str(tmp_path / "masks.npy"),
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0, err
    analysis = load_analysis(out / "analysis")
    cloud = analysis["pool2"].cloud
    assert cloud.sampling == "foreground"
    index = analysis.provenance["sample_image_index"]
    rf = cloud.receptive_field
    cy, cx = (rf[:, 0] + rf[:, 2] - 1) // 2, (rf[:, 1] + rf[:, 3] - 1) // 2
    assert masks[index[cloud.image_index], cy, cx].all()


def test_mask_folder_matched_by_file_name(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(12):
        picture = (rng.random((8, 8)) * 255).astype(np.uint8)
        Image.fromarray(picture).save(images / f"img{i:02d}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[i % 6 : i % 6 + 3, 2:5] = 255
        Image.fromarray(mask).save(masks / f"img{i:02d}.png")
    job = {
        "images": np.zeros((12, 8, 8)),
        "image_names": [f"img{i:02d}.png" for i in range(12)][::-1],
        "provenance": {},
    }
    args = cli.build_parser().parse_args(
        ["report", "--sample", "x", "--out", "o", "--sampling", "foreground", "--mask", str(masks)]
    )
    got = cli._read_mask(args, job)
    assert got.shape == (12, 8, 8) and got.dtype == bool
    assert got[0][5:8, 2:5].all() and got[0].sum() == 9  # img11 (11 % 6 = 5) comes first


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--perturb", "gaussian"], "needs a strength"),
        (["--perturb", "prune:0.5"], "does not belong"),
        (["--compress", "int4"], "unknown variant"),
        (["--sampling", "foreground"], "needs --mask"),
        (["--mask", "masks.npy"], "--sampling foreground"),
    ],
)
def test_bad_robustness_options_stop_with_one_line(tmp_path, extra, message):
    code, err = _run(["--sample", "digits", "--out", str(tmp_path / "out"), "--quiet", *extra])
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
