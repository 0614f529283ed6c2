"""What each frame of a plane is compared with: the baseline and the layers warped with it.

The baseline is the registered mean of the first frames' primary attenuation, over a
region of interest in working pixels. Each new frame is registered to it, and the layers
that go with it (its edge strength, the pixels never to compare, the sleeve beside the
steel) are shifted by the same sub-pixel warp in one call, as channels of one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The channels of the layer image (h, w, 4) float32, shifted together each frame.
LAYER_ATTENUATION = 0  # the baseline's primary attenuation (log units)
LAYER_GRADIENT = 1  # its edge strength (log units per pixel), for the cement threshold
LAYER_EXCLUDED = 2  # 1 where pixels are never compared: the steel, outside the collimation
LAYER_SLEEVE = 3  # 1 in the strips beside the steel where cement may run back (lateral)
# After a sub-pixel shift the 0/1 channels blend at their edges: a pixel a quarter
# excluded is excluded (the steel's edge must not read as cement), and a pixel counts as
# sleeve only when it is mostly in it.
EXCLUDED_ABOVE = 0.25
SLEEVE_ABOVE = 0.75


@dataclass(frozen=True)
class BaselineState:
    """The baseline over one ROI (all arrays (h, w) in working pixels of that ROI)."""

    attenuation: np.ndarray  # (h, w) float32
    layers: np.ndarray  # (h, w, 4) float32: see LAYER_*
    exclude: np.ndarray  # (h, w) bool: never compared
    prior: tuple[np.ndarray, np.ndarray] | None  # cement already in the baseline: (mask, log units)
    scatter_layers: np.ndarray | None  # (h, w, 2): measured intensity and modelled scatter

    def window(self, rows: slice, cols: slice) -> BaselineState:
        """The same baseline over a window of this ROI (views, not copies)."""
        w = (rows, cols)
        return BaselineState(
            self.attenuation[w],
            self.layers[w],
            self.exclude[w],
            None if self.prior is None else (self.prior[0][w], self.prior[1][w]),
            None if self.scatter_layers is None else self.scatter_layers[w],
        )
