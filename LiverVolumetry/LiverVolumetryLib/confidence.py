"""Network confidence: how much of the liver the network was unsure about.

Where the network is sure, its liver probability is near 0 or 1 and the uncertain voxels
form a thin shell along the liver's border. When it fails on an unusual scan (a liver
darker than expected, a cyst beside it), large regions sit in between. The measure is
the number of network-grid voxels with a probability between ``UNSURE_LOW`` and
``UNSURE_HIGH``, divided by the number of voxels at 0.5 or above (the liver's size on the
network grid), so it does not depend on the input's voxel size.

Measured with the cross-validation fold models of ``liver-mri-4mm`` on the 14 shared CHAOS
cases, each unseen by its model: 0.12-0.18 on the 12 ordinary cases (Dice 0.87-0.95),
0.79 on the dark liver of case 15 (Dice 0.48-0.58) and 0.43 on case 36, where the cyst is
segmented instead of the liver (Dice 0). On the 16 test phantoms the bundled 2.0.0 gives
0.11-0.26 and the 4 mm model 0.12-0.31. The limit was chosen after seeing these figures.

This check rests on the network's output, so it applies to automatic masks only; the
anatomical checks in :mod:`.plausibility` apply to every mask.
"""

from __future__ import annotations

import numpy as np

UNSURE_LOW, UNSURE_HIGH = 0.2, 0.8
MAX_UNSURE_FRACTION = 0.3


def unsure_fraction(probability: np.ndarray) -> float:
    """Voxels with ``UNSURE_LOW < p < UNSURE_HIGH`` per voxel with ``p >= 0.5`` (per one
    voxel when none reaches 0.5, so that the figure stays finite)."""
    unsure = int(np.count_nonzero((probability > UNSURE_LOW) & (probability < UNSURE_HIGH)))
    return unsure / max(int(np.count_nonzero(probability >= 0.5)), 1)


def confidence_warnings(fraction: float | None) -> list[str]:
    """One sentence when the network was unsure about much of the liver; [] otherwise
    (also for ``None``: no network output, e.g. a mask drawn by hand)."""
    if fraction is None or fraction <= MAX_UNSURE_FRACTION:
        return []
    return [f"the network was unsure (probability {UNSURE_LOW:g}-{UNSURE_HIGH:g}) about a region "
            f"{_percent(fraction)} % of the liver's size, "
            f"usually under {100 * MAX_UNSURE_FRACTION:.0f} %: check the whole mask"]


def _percent(fraction: float) -> str:
    """``fraction`` in per cent, with as many decimals as it takes to show it above the limit
    (30.04 % is "30.04", not "30", which would read as the limit itself)."""
    for digits in range(4):
        text = f"{100 * fraction:.{digits}f}"
        if float(text) > 100 * MAX_UNSURE_FRACTION:
            return text
    return text
