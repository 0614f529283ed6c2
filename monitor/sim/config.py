"""What a simulated case is: ``SimConfig``, the one description of a case, and the choices it
takes (scenarios, noise levels, fields).

Kept apart from the renderer so that reading a case's options (the ``monitor simulate``
parser, which every ``monitor`` command builds) imports neither the voxel phantom's SciPy
nor pydicom: that import cost every command about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.sim.world import World

SCENARIOS = ("none", "proximity", "posterior", "venous", "disc")
MU_CEMENT_DEFAULT = 0.20  # 1/mm at ~60 keV: PMMA with ~30% BaSO4 (the simple world's cement)
NOISE_LEVELS = {"low": 80000.0, "normal": 25000.0, "high": 6000.0}  # photons/mm^2 behind the spine
FIELDS = ("open", "shutters", "round")
CLEFT_SITES = ("middle", "superior", "inferior")  # where a gas cleft lies (SimConfig.cleft_site)


@dataclass(frozen=True)
class SimConfig:
    """One simulated case: what ``monitor simulate`` renders. Lengths in mm, ``size`` in
    detector pixels (square), ``cement_mu`` in 1/mm; the seed decides the anatomy, needle,
    cement and noise."""

    seed: int = 0
    scenario: str = "none"
    level: str = "L1"
    size: int = 512
    frames: int = 90
    fps: float = 15.0
    side: str = "left"  # left, right or bipedicular
    fracture: str = "wedge"
    noise: str = "normal"
    breathing_mm: float = 1.5  # peak cranio-caudal excursion; 0 for none
    intensity: str = "LIN"  # detector response written: LIN or LOG
    photometric: str = "MONOCHROME2"
    bits: int = 12
    field: str = "open"
    mirror: bool = False  # lateral image with anterior on the right
    compression: str = "jpegls"
    cement_mu: float = MU_CEMENT_DEFAULT
    sid_mm: float = 1000.0
    sod_mm: float = 750.0
    detector_mm: float = 160.0  # side of the (zoomed) detector field
    scatter_to_primary: float = 0.15
    # The first cannula pulled back (positive) or pushed in (negative) by this many
    # mm from frame ``needle_move_frame`` on, as when the operator repositions it.
    needle_move_frame: int | None = None
    needle_move_mm: float = 0.0
    # None: the simple world (one energy; cement_mu and scatter_to_primary above), for fast
    # tests. A World: the realistic one (monitor.sim.realistic), which ignores those two.
    world: World | None = None
    # The anatomy: "geometric" (boxes; fracture applies) or "ct" (a real patient's CT,
    # monitor.sim.ct; levels T8-T12 and L1). ``cleft``: a gas-filled intravertebral cleft,
    # ``cleft_site`` where: "middle" (mid-height, in the body's anterior half), or "superior" /
    # "inferior" (just under that endplate, where a real cleft often lies and where cement
    # filling it rises above or below the bolus as a disc leak would)
    anatomy: str = "geometric"
    cleft: bool = False
    cleft_site: str = "middle"

    def validate(self) -> None:
        checks = [
            (self.scenario in SCENARIOS, f"scenario must be one of {', '.join(SCENARIOS)}"),
            (64 <= self.size <= 2048, "size must be 64..2048 pixels"),
            (6 <= self.frames <= 2000, "frames must be 6..2000"),
            (1.0 <= self.fps <= 60.0, "fps must be 1..60"),
            (self.side in ("left", "right", "bipedicular"), "side must be left, right or bipedicular"),
            (self.noise in NOISE_LEVELS, f"noise must be one of {', '.join(NOISE_LEVELS)}"),
            (self.intensity in ("LIN", "LOG"), "intensity must be LIN or LOG"),
            (self.photometric in ("MONOCHROME1", "MONOCHROME2"), "photometric must be MONOCHROME1/2"),
            (8 <= self.bits <= 16, "bits must be 8..16"),
            (self.field in FIELDS, f"field must be one of {', '.join(FIELDS)}"),
            (0.0 <= self.breathing_mm <= 10.0, "breathing must be 0..10 mm"),
            (0 < self.sod_mm < self.sid_mm, "need 0 < SOD < SID"),
            (
                self.needle_move_frame is None or 0 < self.needle_move_frame < self.frames,
                "needle_move_frame must be inside the recording",
            ),
            (abs(self.needle_move_mm) <= 20.0, "needle_move_mm must be within +-20 mm"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.anatomy not in ("geometric", "ct"):
            raise ValueError("anatomy must be geometric or ct")
        if self.cleft_site not in CLEFT_SITES:
            raise ValueError(f"cleft_site must be one of {', '.join(CLEFT_SITES)}")
        if self.cleft_site != "middle" and not self.cleft:
            raise ValueError("a cleft site (--cleft-site) needs a cleft: give --cleft too")
        if self.anatomy == "ct":
            from monitor.sim.ct import LABELS

            if self.level not in LABELS:
                raise ValueError(f"the CT anatomy has levels {', '.join(LABELS)}")
        if self.world is not None:
            self.world.validate()
            if self.world.video and (self.bits != 8 or self.intensity != "LOG"):
                raise ValueError("8-bit video (world.video) needs bits 8 and intensity LOG")
