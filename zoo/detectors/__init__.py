"""zoo.detectors: insect detectors for the crop job (original photo -> raw box + confidence).

`create_detector("classical")` needs no weights; `create_detector("detr", checkpoint=...)` runs the BIOSCAN
crop tool's DETR model. Both meet `zoo.detectors.base.Detector`.
"""

from __future__ import annotations

from zoo.detectors.base import Box as Box
from zoo.detectors.base import Detection as Detection
from zoo.detectors.base import Detector as Detector
from zoo.detectors.base import create_detector as create_detector
from zoo.detectors.base import list_detectors as list_detectors
from zoo.detectors.base import register_detector as register_detector

__all__ = ["Box", "Detection", "Detector", "create_detector", "list_detectors", "register_detector"]
