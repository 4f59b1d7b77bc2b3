"""What each audit profile runs, on how many examples, and within what time budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from robustlab.errors import unknown


@dataclass(frozen=True)
class Profile:
    """The work of one audit profile. ``weights`` share the time left among the stages still to
    run (time a stage does not use flows to the next ones)."""

    name: str
    budget: float  # seconds for the whole audit, model loading and the HTML page included
    n: int | None  # examples (the first n of the data); None: all
    suite: str  # attack suite: "fast" or "standard"
    methods: tuple[str, ...]  # bound methods, cheapest first
    alpha_scope: str  # alpha-CROWN on the gap points at: "none" | "headline" | "all" eps
    corruptions: str  # corruption names or group for image data
    severities: str
    max_shift: int | None  # translations up to this many pixels (None: no transformations)
    frequency: bool  # octave-band noise
    explain_methods: tuple[str, ...]
    n_explain: int  # examples with heat-maps
    ig_steps: int
    n_adversarial: int  # adversarial examples shown
    smoothing_n0: int
    smoothing_n: int
    smoothing_examples: int
    weights: dict  # stage name -> share of the time left

    def to_dict(self) -> dict:
        return asdict(self)


QUICK = Profile(
    name="quick",
    budget=90.0,
    n=100,
    suite="fast",
    methods=("ibp", "crown"),
    alpha_scope="none",
    corruptions="all",
    severities="1,3,5",
    max_shift=1,
    frequency=False,
    explain_methods=("saliency", "integrated-gradients"),
    n_explain=6,
    ig_steps=32,
    n_adversarial=6,
    smoothing_n0=50,
    smoothing_n=1000,
    smoothing_examples=50,
    weights={
        "clean": 0.02,
        "attacks": 0.35,
        "certified": 0.35,
        "corruptions": 0.12,
        "smoothing": 0.1,
        "sensitivity": 0.03,
        "examples": 0.03,
    },
)
STANDARD = Profile(
    name="standard",
    budget=900.0,
    n=500,
    suite="fast",
    methods=("ibp", "crown", "alpha-crown"),
    alpha_scope="headline",
    corruptions="all",
    severities="1-5",
    max_shift=2,
    frequency=True,
    explain_methods=("saliency", "integrated-gradients", "smoothgrad"),
    n_explain=8,
    ig_steps=64,
    n_adversarial=8,
    smoothing_n0=100,
    smoothing_n=10_000,
    smoothing_examples=100,
    weights={**QUICK.weights, "certified": 0.4, "smoothing": 0.15},
)
FULL = replace(  # the standard profile, on every example, with more of everything
    STANDARD,
    name="full",
    budget=3 * 3600.0,
    n=None,
    suite="standard",
    methods=("ibp", "crown-ibp", "crown", "alpha-crown"),
    alpha_scope="all",
    ig_steps=128,
    smoothing_n=100_000,
    smoothing_examples=500,
    weights={**STANDARD.weights, "attacks": 0.4},
)
PROFILES: dict[str, Profile] = {p.name: p for p in (QUICK, STANDARD, FULL)}

# bounds "as the model size allows": CROWN and alpha-CROWN only below these sizes
CROWN_MAX_PARAMS = 5_000_000
CROWN_MAX_INPUTS = 3 * 64 * 64
ALPHA_MAX_PARAMS = 500_000


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown("profile", name, PROFILES)
    return PROFILES[name]


def default_eps(norm: str, span: float = 1.0, shape: tuple[int, ...] | None = None) -> list[float]:
    """Eps for the curves when none are given, in units of the data range and by the field's
    convention for the data's kind (the headline is the middle one): colour images of 32 px or
    more (CIFAR-like) Linf 2/255 to 16/255 (headline 8/255); grey images of 28 px or more
    (MNIST-like) Linf 0.1 to 0.4 (headline 0.3); otherwise Linf 0 to 0.2, L2 0 to 2."""
    image = shape is not None and len(shape) == 3 and min(shape[1:]) >= 28
    if norm == "inf" and image and shape[0] == 3 and min(shape[1:]) >= 32:
        return [k * span / 255 for k in (0, 2, 4, 8, 12, 16)]  # exactly 8/255 on [0, 1]
    if norm == "inf" and image and shape[0] == 1:
        rel = (0.0, 0.1, 0.2, 0.3, 0.35, 0.4)
    elif norm == "inf":
        rel = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    else:
        rel = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
    return [round(r * span, 10) for r in rel]


def headline_eps(eps: list[float]) -> float:
    """The eps of the summary verdict: the middle of the positive eps (the lower middle)."""
    positive = sorted({e for e in eps if e > 0})
    return positive[(len(positive) - 1) // 2] if positive else 0.0
