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
        (["--occlusion-mask", "masks.npy"], "occlusion variant only"),
        (["--perturb", "gaussian:0.1", "--occlusion-mask", "m.npy"], "occlusion variant only"),
    ],
)
def test_bad_robustness_options_stop_with_one_line(tmp_path, extra, message):
    code, err = _run(["--sample", "digits", "--out", str(tmp_path / "out"), "--quiet", *extra])
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def _mask_args(path) -> object:
    return cli.build_parser().parse_args(
        ["report", "--sample", "x", "--out", "o", "--sampling", "foreground", "--mask", str(path)]
    )


def test_a_mask_folder_is_not_read_through_links(tmp_path):
    from PIL import Image

    from napari_topolens.errors import ImageError

    outside = tmp_path / "outside.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(outside)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(masks / "a.png")
    (masks / "b.png").symlink_to(outside)
    job = {"images": np.zeros((2, 8, 8)), "provenance": {}}
    with pytest.raises(ImageError, match="link"):
        cli._read_mask(_mask_args(masks), job)
    (masks / "b.png").unlink()
    (tmp_path / "linked").symlink_to(masks, target_is_directory=True)
    with pytest.raises(ImageError, match="link"):
        cli._read_mask(_mask_args(tmp_path / "linked"), job)


def test_a_mask_archive_is_read_only_as_far_as_the_images_need(tmp_path):
    """The declared shape is not trusted for allocation: rows past the last needed one are not read."""
    import zipfile

    from napari_topolens.errors import ImageError

    rows = np.zeros((4, 8, 8), dtype=bool)
    rows[:, 2:5, 2:5] = True
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|b1", "fortran_order": False, "shape": (1_000_000, 8, 8)}
    )
    with zipfile.ZipFile(tmp_path / "masks.npz", "w") as archive:  # declares far more than it holds
        archive.writestr("masks.npy", header.getvalue() + rows.tobytes())
    args = _mask_args(tmp_path / "masks.npz")
    args.max_images = 3
    got = cli._read_mask(args, {"images": np.zeros((3, 8, 8)), "provenance": {}})
    np.testing.assert_array_equal(got, rows[:3])
    args.max_images = 10
    with pytest.raises(ImageError, match="shorter than the masks it declares"):
        cli._read_mask(args, {"images": np.zeros((10, 8, 8)), "provenance": {}})
    np.save(tmp_path / "wrong.npy", np.zeros((3, 9, 8), bool))
    with pytest.raises(ImageError, match=r"\(N, 8, 8\)"):
        cli._read_mask(
            _mask_args(tmp_path / "wrong.npy"), {"images": np.zeros((3, 8, 8)), "provenance": {}}
        )


def test_occlusion_variant_greys_the_pixels_of_the_occlusion_mask(tmp_path):
    sample = load_sample("digits")
    mask = np.zeros(sample.images.shape, dtype=bool)
    mask[:, :, :4] = True  # the left half of every digit
    np.save(tmp_path / "occlude.npy", mask)
    out = tmp_path / "report"
    code, err = _run(
        [
            "--sample",
            "digits",
            "--layers",
            "pool1,fc1",
            "--perturb",
            "occlusion:1",
            "--occlusion-mask",
            str(tmp_path / "occlude.npy"),
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0, err
    analysis = load_analysis(out / "analysis")
    original, occluded = analysis.images, analysis.variants[0].analysis.images
    index = np.asarray(analysis.provenance["sample_image_index"])
    np.testing.assert_array_equal(occluded[:, :, 4:], original[:, :, 4:])  # right half kept
    assert not np.array_equal(occluded[:, :, :4], original[:, :, :4])
    assert len(np.unique(occluded[:, :, :4])) == 1  # one fill value over the masked pixels
    assert len(index) == len(original)
