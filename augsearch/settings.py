"""A search space as data: the frozen dataclasses :func:`augsearch.space.load_space` fills, and the
names a space may choose from.

Every module that reads a space (policy, study, teacher, distill, proxy, warm starts, bench) imports
these classes from here; only the commands read a space file (``augsearch/space.py``), so the file
parser may use the modules below it (the op catalogue, the baselines, the policy-file checks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from augsearch.data import SyntheticSpec

SAMPLERS = ("tpe", "random", "cmaes", "gp")  # augsearch/study.py: make_sampler
PRUNERS = ("median", "hyperband", "successive-halving", "none")
SCHEDULES = ("onecycle", "cosine")
KD_LOSSES = ("hinton", "dkd")  # augsearch/distill.py: hinton_loss, dkd_loss
# The searched per-image structures (augsearch/policy.py builds each) and the keys that belong to each.
STRUCTURES = {
    "slots": ("slots",),
    "subpolicies": ("subpolicies", "length"),
    "randaugment": ("n", "m"),
    "trivial": (),
}
# Albumentations classes a space may name as a fixed stage, besides the catalogue's ops (augsearch/ops.py):
# the geometric, crop, pad and flip stages of the usual dataset recipes. Normalisation is not among them:
# the pipeline must hand uint8 images to the loader, which normalises on the device (augsearch/loader.py).
# An exported policy file may hold only these, the catalogue's ops and the containers (augsearch/validate.py).
FIXED_STAGES = (
    "Pad", "PadIfNeeded", "RandomCrop", "CenterCrop", "Crop", "RandomResizedCrop", "Resize", "LongestMaxSize",
    "SmallestMaxSize", "HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4",
)  # fmt: skip


@dataclass(frozen=True)
class Range:
    """A searched float; ``low == high`` fixes it."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Stage:
    """A fixed albumentations stage applied to every image: class name and its arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSettings:
    name: str
    validation_fraction: float = 0.1
    synthetic: SyntheticSpec | None = None
    # Scarce labels: the student learns from only this many labelled training images (a seeded,
    # stratified draw, the same in every trial and retrain); the teacher still sees the whole training
    # split (augsearch/workspace.py: labelled_pool says why). None: all of them.
    labelled: int | None = None


@dataclass(frozen=True)
class TeacherSettings:
    model: str
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.1
    checkpoint: str | None = None


@dataclass(frozen=True)
class TrainSettings:
    """One training budget: a trial's (on a subset) or the final retrain's (on train + validation)."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    subset: int | None = None
    # A trial's validations per epoch, each reported to the pruner as one step: with 2, the pruner can stop
    # a trial after half an epoch (fewer images in its first rung). A retrain validates once per epoch.
    reports_per_epoch: int = 1
    # The other way round: a trial's epochs between validations. With 20, a 120-epoch trial validates
    # after epochs 20, 40, ..., 120 (six pruner steps): for long trials on few images, where validating
    # on the whole validation split costs more than an epoch of training. The last epoch always validates.
    epochs_per_report: int = 1

    def __post_init__(self) -> None:
        if self.reports_per_epoch > 1 and self.epochs_per_report > 1:
            raise ValueError("reports_per_epoch and epochs_per_report cannot both be above 1")

    @property
    def reports(self) -> int:
        """How many validations a whole run makes: the pruner's steps are 1 .. this."""
        if self.epochs_per_report > 1:
            return -(-self.epochs // self.epochs_per_report)
        return self.epochs * self.reports_per_epoch

    def validates_after(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` (0-based) is validated."""
        return (epoch + 1) % self.epochs_per_report == 0 or epoch + 1 == self.epochs

    def epochs_at(self, report: int) -> float:
        """Epochs trained when report ``report`` (1-based) is made."""
        if self.epochs_per_report > 1:
            return min(report * self.epochs_per_report, self.epochs)
        return report / self.reports_per_epoch

    def to_dict(self) -> dict:
        """The settings as run keys and run records store them: ``reports_per_epoch`` and
        ``epochs_per_report`` only when not 1 (a retrain's never are), so the runs recorded before they
        existed keep their names."""
        settings = asdict(self)
        for key in ("reports_per_epoch", "epochs_per_report"):
            if settings[key] == 1:
                del settings[key]
        return settings


@dataclass(frozen=True)
class IntRange:
    """A searched integer (Optuna ``suggest_int``); ``low == high`` fixes it."""

    low: int
    high: int


@dataclass(frozen=True)
class ErasingSpace:
    """``erasing: {p: ..., size: ...}``: Cutout's probability and hole side (a fraction of the image side)."""

    p: Range
    size: Range


@dataclass(frozen=True)
class PolicySpace:
    """The searched per-image part of a policy, applied after the fixed stages.

    ``structure`` is one of :data:`STRUCTURES`: ``slots`` (``slots`` ops applied in turn, each with its
    own searched op, p and magnitude), ``subpolicies`` (AutoAugment: ``subpolicies`` sub-policies of
    ``length`` such ops, one chosen uniformly per image), ``randaugment`` (N ops drawn per image, identity
    included, at a shared magnitude M; ``n`` and ``m`` searched) or ``trivial`` (TrivialAugment: one op
    per image, uniform op and strength; nothing searched). The ops are ``ops`` (None: the whole catalogue)
    less ``exclude``, less the colour ops on grey data. ``erasing`` adds Cutout with searched p and size.
    """

    slots: int = 0
    ops: tuple[str, ...] | None = None  # None: every catalogue op that suits the data's channels
    structure: str = "slots"
    subpolicies: int = 0
    length: int = 0
    n: IntRange | None = None
    m: Range | None = None
    exclude: tuple[str, ...] = ()
    erasing: ErasingSpace | None = None


@dataclass(frozen=True)
class MixSpace:
    """``mixing: {kinds: [none, mixup, cutmix], p: ..., alpha: ...}`` (augsearch/mixing.py).

    Several kinds make a categorical parameter ``mix_kind``; ``p`` (probability that a batch is mixed)
    and ``alpha`` (λ ~ Beta(α, α)) are suggested only in trials whose kind mixes. No section: no mixing.
    """

    kinds: tuple[str, ...] = ("none",)
    p: Range | None = None
    alpha: Range | None = None


@dataclass(frozen=True)
class TrainSearch:
    """What a trial's budget searches: ``trial: {lr: {low, high, log}, epochs: [1, 2], batch_size: [64]}``.

    Empty: nothing (``space.trial`` is used as it is). The retrain's budget is never searched: the
    searched policy and the baselines are retrained alike.
    """

    lr: Range | None = None
    epochs: tuple[int, ...] = ()
    batch_size: tuple[int, ...] = ()


@dataclass(frozen=True)
class KDSpace:
    """``kd: {loss: [hinton, dkd], temperature: ..., alpha: ..., beta: ...}``.

    ``losses`` lists the loss families to search (one: fixed; several: a categorical parameter
    ``kd_loss``); a space without ``loss`` means Hinton only. ``beta`` (the NCKD weight of DKD) is
    required when ``dkd`` is listed and refused otherwise; it is suggested only in trials that chose DKD.
    For DKD ``alpha`` is the TCKD weight (CE keeps weight 1), for Hinton the KD-vs-CE mix.
    """

    temperature: Range
    alpha: Range
    losses: tuple[str, ...] = ("hinton",)
    beta: Range | None = None
    # ``temperature_schedule: constant | linear`` (or both: categorical); linear anneals T from
    # ``temperature`` on the first epoch to ``temperature_end`` on the last (KDSettings.at_epoch)
    temperature_schedules: tuple[str, ...] = ("constant",)
    temperature_end: Range | None = None


@dataclass(frozen=True)
class ProxySettings:
    """The T. stddev proxy (``augsearch/proxy.py``), computed for every policy before its trial trains.

    ``proxy: {batches: 4, skip_worst_fraction: 0.0, startup_trials: 5}`` (all optional, these are the
    defaults): ``batches`` augmented batches of the trial's batch size feed the teacher (0 turns the
    proxy off, 1 is refused: a standard deviation needs two); with ``skip_worst_fraction`` f > 0, a
    policy whose proxy is in the highest (worst: the paper finds lower T. stddev better) fraction f of
    the values seen so far in the study is pruned at step 0, before any training, once
    ``startup_trials`` values have been seen.
    """

    batches: int = 4
    skip_worst_fraction: float = 0.0
    startup_trials: int = 5


@dataclass(frozen=True)
class BaselineSettings:
    """``baselines: {names: [standard, student-alone], temperature: 4.0, alpha: 0.9, kd: [fixed]}``.

    ``names`` are the baselines ``augsearch run`` retrains beside the searched policy (see
    ``augsearch/baselines.py``; ``augsearch retrain --baselines`` can ask for any); the KD baselines
    use ``temperature`` and ``alpha``, Hinton's usual setting unless the space says otherwise.
    """

    names: tuple[str, ...] = ()
    temperature: float = 4.0
    alpha: float = 0.9
    # which KD settings the KD baselines are retrained with: "fixed" (above), "searched" (the best
    # trial's: augsearch/fair.py), or both; ``augsearch retrain --baselines-kd`` overrides it
    kd: tuple[str, ...] = ("fixed",)


@dataclass(frozen=True)
class StudySettings:
    trials: int
    sampler: str = "tpe"
    seed: int = 0
    pruner: str = "median"
    pruner_args: dict[str, Any] = field(default_factory=dict)
    sampler_args: dict[str, Any] = field(default_factory=dict)
    warm_starts: tuple[str, ...] = ()  # baselines enqueued as the first trials (augsearch/warmstart.py)
    # Whole parameter sets enqueued after them, e.g. another study's best trial (augsearch/warmstart.py)
    warm_start_params: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class GanRecipe:
    """How the class-conditional generator is trained (augsearch/gan.py); the defaults are the shipped
    recipe, sized for Fashion-MNIST on a 2-core CPU in under 5 minutes (README): ``width`` is the
    generator's last hidden width (the discriminator's first), ``z_dim`` the noise size. An epoch is
    ``epoch_images`` images drawn from the training split in a seeded order (all when None): the unit
    between two checkpoints."""

    epochs: int = 3
    batch_size: int = 64
    lr: float = 5e-4  # 2e-4 (the papers') reached agreement 0.45 where 5e-4 reached 0.58, at 400 steps
    z_dim: int = 64
    width: int = 16
    epoch_images: int | None = 12_800


GENERATORS = ("dcgan",)  # augsearch/gan.py


@dataclass(frozen=True)
class SynthesisSpace:
    """``synthesis: {generator: dcgan, ratio: {low: 0.0, high: 0.5}, hard_labels: [true, false],
    augment: [true, false]}`` (augsearch/synthesis.py): the share of each training batch that is
    synthetic (``ratio``, 0 = off), whether cross-entropy also applies to synthetic images with their
    class (``hard_labels``) and whether the per-image pipeline runs on them (``augment``); one value
    is fixed, several a categorical parameter. The images come from a class-conditional ``generator``
    trained once on the training split and cached (``recipe``; ``checkpoint: PATH`` loads one instead),
    or from ``source: npz:PATH`` (the user's own images, labels optional). A generator whose images the
    teacher assigns to their class less often than ``min_agreement`` is refused."""

    ratio: Range
    hard_labels: tuple[bool, ...] = (True,)
    augment: tuple[bool, ...] = (False,)
    generator: str | None = "dcgan"
    source: str | None = None
    checkpoint: str | None = None
    recipe: GanRecipe = field(default_factory=GanRecipe)
    min_agreement: float = 0.3
    samples: int = 2000  # images per quality figure (and per real half of the Fréchet reference)


@dataclass(frozen=True)
class ScheduleSpace:
    """``schedule: {kind: [constant, linear, adaptive], ...}``: the strength schedule (augsearch/schedule.py).

    ``kinds`` lists the kinds to search (one: fixed; several: a categorical parameter
    ``schedule_kind``); each kind's settings are suggested only in the trials that chose it: ``start``
    and ``end`` (linear), ``initial``, ``signals``, ``targets`` (one range per signal), ``step`` and
    ``interval`` (adaptive). No section: ``constant``, no parameter at all, today's behaviour.
    """

    kinds: tuple[str, ...] = ("constant",)
    start: Range = Range(0.0, 1.0)
    end: Range = Range(1.0, 1.0)
    initial: Range = Range(0.5, 0.5)
    signals: tuple[str, ...] = ("agreement",)
    targets: dict[str, Range] = field(default_factory=dict)  # signal -> set-point range
    step: Range = Range(0.05, 0.05)
    interval: IntRange = IntRange(16, 16)
    scale_p: bool = False


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    path: Path
    sha256: str
    dataset: DataSettings
    teacher: TeacherSettings
    student: str
    fixed: tuple[Stage, ...]
    policy: PolicySpace
    kd: KDSpace
    trial: TrainSettings
    retrain: TrainSettings
    study: StudySettings
    proxy: ProxySettings = field(default_factory=ProxySettings)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)
    fixed_searched: bool = False  # True: parameter ``fixed_on`` switches all fixed stages on or off
    mixing: MixSpace = field(default_factory=MixSpace)
    trial_search: TrainSearch = field(default_factory=TrainSearch)
    schedule: ScheduleSpace = field(default_factory=ScheduleSpace)
    synthesis: SynthesisSpace | None = None  # None: no synthetic images (augsearch/synthesis.py)
