"""Synthetic phantom: determinism, plausible anatomy, contrast, and physical alignment on any grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scipy import ndimage

from LiverVolumetryLib.phantom import CONTRASTS, MAX_RANDOM_VOXELS, TISSUE_NAMES, Phantom, _make_grid, make_phantom
from LiverVolumetryLib.phantom_anatomy import _make_anatomy

SMALL = dict(shape=(64, 64, 24), spacing=(6.0, 6.0, 10.0))


def _arrays(p: Phantom) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(sitk.GetArrayFromImage(im) for im in (p.image, p.liver, p.tissues))


def _stats(mask: sitk.Image) -> tuple[np.ndarray, float]:
    """Physical centroid (mm) and volume (mL) of a non-empty binary mask."""
    st = sitk.LabelShapeStatisticsImageFilter()
    st.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    assert st.HasLabel(1), "mask is empty"
    return np.array(st.GetCentroid(1)), st.GetPhysicalSize(1) / 1000.0


def _touches_border(a: np.ndarray) -> bool:
    return bool(a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any() or a[:, :, 0].any() or a[:, :, -1].any())


@pytest.fixture(scope="module")
def default() -> Phantom:
    return make_phantom(0)


def test_types_and_shared_grid(default):
    assert default.image.GetPixelID() == sitk.sitkFloat32 and default.image.GetDimension() == 3
    assert default.liver.GetPixelID() == sitk.sitkUInt8 and default.tissues.GetPixelID() == sitk.sitkUInt8
    for other in (default.liver, default.tissues):
        assert other.GetSize() == default.image.GetSize()
        assert other.GetOrigin() == default.image.GetOrigin()
        assert other.GetSpacing() == default.image.GetSpacing()
        assert other.GetDirection() == default.image.GetDirection()
    img, liver, tissues = _arrays(default)
    assert np.isfinite(img).all() and img.min() >= 0 and img.max() > 50
    assert set(np.unique(tissues)) <= set(TISSUE_NAMES)


def test_deterministic_and_seed_dependent():
    a, b, c = make_phantom(3, **SMALL), make_phantom(3, **SMALL), make_phantom(4, **SMALL)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.image.GetOrigin() == b.image.GetOrigin()
    assert not np.array_equal(_arrays(a)[1], _arrays(c)[1])


def test_default_liver_plausible_and_in_field_of_view(default):
    _, liver, tissues = _arrays(default)
    _, volume = _stats(default.liver)
    assert 900 < volume < 2700
    assert not _touches_border(liver)
    np.testing.assert_array_equal(liver, np.isin(tissues, (1, 2, 3, 4)).astype(np.uint8))


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_liver_position_is_anatomical(seed):
    p = make_phantom(seed, **SMALL)
    tissues = sitk.GetArrayFromImage(p.tissues)
    liver_c, volume = _stats(p.liver)
    body_c, _ = _stats(p.tissues > 0)
    kidney_c, _ = _stats(p.tissues == 6)
    spine_c, _ = _stats(p.tissues == 7)
    assert 900 < volume < 2700
    assert liver_c[0] < 0 and liver_c[0] < body_c[0] - 15   # patient's right is -x in LPS
    assert liver_c[1] < spine_c[1]                           # anterior to the spine (-y is anterior)
    assert liver_c[2] > kidney_c[2]                          # above the kidneys (+z is superior)
    assert not _touches_border(sitk.GetArrayFromImage(p.liver))
    assert (tissues == 5).any() and (tissues == 12).any()    # spleen and lung are there too


def test_lesions_and_vessels_are_inside_the_liver():
    found = 0
    for seed in range(12):
        p = make_phantom(seed, **SMALL)
        _, liver, tissues = _arrays(p)
        inner = np.isin(tissues, (2, 3, 4))
        assert (liver[inner] == 1).all()
        found += int(np.isin(tissues, (2, 3)).any())
    assert found >= 3, "lesions should appear in a fair share of phantoms"


def test_same_anatomy_in_physical_space_on_different_grids():
    a = make_phantom(7, shape=(96, 80, 40), spacing=(4.0, 4.0, 6.0), orientation="LPS", oblique_degrees=0)
    b = make_phantom(7, shape=(80, 70, 64), spacing=(3.0, 4.0, 5.0), orientation="PIR", oblique_degrees=10)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(a.image.GetDirection()) == "LPS"
    db = np.array(b.image.GetDirection()).reshape(3, 3)
    pir = np.array(sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation("PIR")).reshape(3, 3)
    assert np.trace(db.T @ pir) == pytest.approx(1 + 2 * np.cos(np.radians(10)))  # PIR turned by 10 degrees
    ca, va = _stats(a.liver)
    cb, vb = _stats(b.liver)
    assert np.linalg.norm(ca - cb) < 2.0   # well under one voxel
    assert abs(va - vb) / va < 0.02
    b_on_a = sitk.Resample(b.liver, a.liver, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    x, y = sitk.GetArrayFromImage(a.liver) > 0, sitk.GetArrayFromImage(b_on_a) > 0
    assert 2 * (x & y).sum() / (x.sum() + y.sum()) > 0.93


def _median_ratio(p: Phantom, num: int, den: int) -> float:
    img, _, tissues = _arrays(p)
    return float(np.median(img[tissues == num]) / np.median(img[tissues == den]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrast_t1_portal_venous(seed):
    p = make_phantom(seed, shape=(96, 80, 32), spacing=(4.0, 4.0, 7.0))
    assert _median_ratio(p, 1, 10) > 1.4           # liver brighter than muscle
    assert 0.9 < _median_ratio(p, 5, 1) < 1.5      # spleen similar to / slightly brighter than liver
    assert _median_ratio(p, 4, 1) > 1.2            # enhancing vessels
    assert _median_ratio(p, 9, 1) < 0.6            # fat suppressed
    img, _, tissues = _arrays(p)
    assert np.median(img[tissues == 0]) < 0.1 * np.median(img[tissues == 1])


def test_contrast_t2_differs():
    p = make_phantom(1, shape=(96, 80, 32), spacing=(4.0, 4.0, 7.0), contrast="t2")
    assert _median_ratio(p, 5, 1) > 1.3            # spleen brighter than liver on T2
    assert _median_ratio(p, 13, 1) > 1.8 or not (sitk.GetArrayFromImage(p.tissues) == 13).any()  # bile bright
    t1 = make_phantom(1, shape=(96, 80, 32), spacing=(4.0, 4.0, 7.0))
    np.testing.assert_array_equal(_arrays(p)[1], _arrays(t1)[1])   # same anatomy, different contrast


def test_random_geometry_respects_ranges():
    orientations = set()
    for seed in range(30):
        rng_anat, rng_grid = (np.random.default_rng([seed, k]) for k in (1, 2))
        g = _make_grid(rng_grid, _make_anatomy(rng_anat), None, None, None, None)
        assert g.spacing[0] == g.spacing[1] and 0.7 <= g.spacing[0] <= 2.0 and 2.0 <= g.spacing[2] <= 8.0
        assert int(np.prod(g.size)) <= MAX_RANDOM_VOXELS
        extent = np.abs(g.direction) @ (g.size * g.spacing)  # approx. field of view along L, P, S
        assert extent[0] > 300 and extent[2] > 150
        assert np.allclose(g.direction.T @ g.direction, np.eye(3), atol=1e-9)
        orientations.add(sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(g.direction.ravel().tolist()))
    assert len(orientations) >= 4


def test_bad_arguments():
    for kwargs in (dict(contrast="ct"), dict(contrast="t1_dual"), dict(contrast="T2"), dict(orientation="LLS"),
                   dict(shape=(0, 4, 4)), dict(spacing=(1, -1, 1)), dict(liver_fat_fraction=1.5)):
        with pytest.raises(ValueError):
            make_phantom(0, **kwargs)


# --------------------------------------------------------------------------- dual-echo T1 (in/opposed phase)
DUAL = dict(shape=(64, 56, 24), spacing=(6.0, 6.0, 10.0))
WATER = (1, 5, 8, 10, 11)  # tissue labels without fat: liver, spleen, blood, muscle, other soft tissue


def _echoes(seed: int, liver_fat: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-phase image, opposed-phase image and tissue labels of one seed."""
    ip, _, tissues = _arrays(make_phantom(seed, contrast="t1_in_phase", liver_fat_fraction=liver_fat, **DUAL))
    op, _, tissues_op = _arrays(make_phantom(seed, contrast="t1_opposed_phase", liver_fat_fraction=liver_fat, **DUAL))
    np.testing.assert_array_equal(tissues, tissues_op)
    return ip, op, tissues


def test_anatomy_and_liver_mask_identical_across_all_contrasts():
    assert {"t1_portal_venous", "t2", "t1_in_phase", "t1_opposed_phase"} <= set(CONTRASTS)
    ref = make_phantom(4, **DUAL)
    images = [sitk.GetArrayFromImage(ref.image)]
    for contrast in CONTRASTS:
        p = make_phantom(4, contrast=contrast, **DUAL)
        np.testing.assert_array_equal(_arrays(p)[1], _arrays(ref)[1])
        np.testing.assert_array_equal(_arrays(p)[2], _arrays(ref)[2])
        assert p.liver.GetOrigin() == ref.liver.GetOrigin() and p.liver.GetDirection() == ref.liver.GetDirection()
        images.append(sitk.GetArrayFromImage(p.image))
    assert all(not np.array_equal(a, b) for k, a in enumerate(images[1:]) for b in images[k + 2:])  # all differ


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_phase_contrast(seed):
    p = make_phantom(seed, contrast="t1_in_phase", **DUAL)
    assert _median_ratio(p, 9, 1) > 1.2            # fat bright without fat saturation
    assert _median_ratio(p, 5, 1) < 0.95           # spleen darker than liver on unenhanced T1
    assert _median_ratio(p, 1, 10) > 1.15          # liver brighter than muscle
    assert _median_ratio(p, 8, 1) < 0.8            # no contrast agent: blood dark


@pytest.mark.parametrize("seed", [0, 3])
def test_opposed_phase_india_ink_rims_at_fat_water_boundaries(seed):
    ip, op, tissues = _echoes(seed, liver_fat=0.0)
    fat, water = tissues == 9, np.isin(tissues, WATER)
    rim = water & ndimage.binary_dilation(fat)                  # water voxels touching fat
    deep = water & ~ndimage.binary_dilation(fat, iterations=2)
    assert rim.sum() > 100 and deep.sum() > 100
    liver_ip, liver_op = np.median(ip[tissues == 1]), np.median(op[tissues == 1])
    assert op[rim].mean() / liver_op < 0.75 * ip[rim].mean() / liver_ip          # dark rim in opposed phase
    assert 0.85 < (op[deep].mean() / liver_op) / (ip[deep].mean() / liver_ip) < 1.2  # not a global drop
    # Far from anything fatty the two echoes of one acquisition are identical.
    cube = np.ones((3, 3, 3), bool)  # the support of the partial-volume blur
    away = ~ndimage.binary_dilation(np.isin(tissues, (6, 7, 9)), cube) & (tissues > 0)
    assert away.sum() > 100
    np.testing.assert_array_equal(op[away], ip[away])


def test_opposed_phase_signal_drop_of_fatty_liver():
    def drop(liver_fat: float | None) -> float:
        ip, op, tissues = _echoes(1, liver_fat)
        ratio = [np.median(im[tissues == 1]) / np.median(im[tissues == 10]) for im in (ip, op)]
        return float(ratio[1] / ratio[0])   # liver/muscle, opposed relative to in-phase
    lean, fatty, drawn = drop(0.0), drop(0.2), drop(None)
    assert fatty < 0.75 * lean                                 # |1 - 2 * 0.2| = 0.6 expected
    assert 0.95 * fatty < drawn < 1.05 * lean                  # random steatosis stays within 0-0.2
