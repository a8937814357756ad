"""``augsearch bench``: where a trial's time goes, measured on this machine, in one run.

A search costs trials x seconds per trial, so the figure that matters is how close a trial's step
comes to what the hardware allows. For the space's trial setup (dataset, teacher, student, trial
batch size, a representative policy) it measures, each after a warm-up that is not counted:

(a) the augmentation pipeline alone, through the trial's loader and its worker processes; and its
    cost per image in this process, through :func:`augsearch.loader.augment` (the compiled path) and
    through the plain ``Compose`` called per image (the same images, byte for byte);
(b) the student's training step alone, on batches already normalised on the device;
(c) the teacher's inference alone;
(d) the full KD trial step: loader + teacher + student, through :func:`augsearch.distill.train_student`,
    as the runtime does it (the teacher's outputs on unchanged images reused, :mod:`augsearch.reuse`,
    from clean outputs kept before the clock starts, as a study's later trials find them), with the
    share of the teacher's passes the reuse saved; the same without the reuse; and with policy ``none``;
    and for one policy sampled from the space, at constant strength and under an adaptive strength
    controller (augsearch/schedule.py), back to back: the controller's cost;
(e) a naive loop in the style of a first KD script: each image augmented in the training loop in the
    main process by calling the plain ``Compose`` (``transform(image=...)``, not the loader's compiled
    path) and made a CHW float tensor as torchvision's ``ToTensor`` does, the batch stacked from them
    (so in the default memory format), no workers, fp32, the teacher's outputs computed with autograd
    on and its BatchNorms unfolded;

then the compute bound ``1 / (1/b + 1/c)`` (student and teacher back to back on the same device, data
for free), the efficiency ``d / bound``, the speed-up ``d / e``; on CPU also the bound once augmentation
is charged to the same cores (``cores / (cores/bound + workers/a)``: the models' step on every core,
each image's augmentation on one) and ``d`` against it; on CUDA the bound ``min(a, compute bound)``
(the GPU computes while the cores augment, so the slower side sets the pace), ``d`` against it, and
the GPU's utilisation during (d) (NVML, through the ``nvidia-ml-py`` package); the proxy's and one
evaluation's seconds, Optuna's own cost per trial (sampling, SQLite writes, pruning: a real study with
the space's sampler and pruner running the trials' own objective, only the training and the proxy left
out) as a share of a trial, and the peak resident memory of this process and of its workers.

The representative policy: the space's fixed stages, then each searched op (a slot, or an op of the
sub-policy an image gets) as a uniform ``OneOf`` over the ops a trial may choose on this data
(``policy.op_choices``), at magnitude 0.5 and probability 0.5 (the sampler's prior draws ops uniformly,
p and m from [0, 1]); RandAugment at the middle of its N and M, TrivialAugment as it is, Cutout at the
middle of its p and size; and KD at the middle of T's and alpha's ranges. The teacher is randomly
initialised: its weights do not change its speed, and the bench never trains one.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from augsearch.compiled import compile_pipeline
from augsearch.control import StrengthControl, run_transform, strength_control
from augsearch.data import load_dataset, stand_in
from augsearch.distill import (
    TrainResult,
    evaluate,
    freeze,
    hinton_loss,
    inference_teacher,
    make_optimiser,
    teacher_logits,
    train_student,
)
from augsearch.gan import build_generator
from augsearch.generator import load_source
from augsearch.loader import Batch, Normaliser, augment, make_loader
from augsearch.models import build_model
from augsearch.ops import make_erasing, make_op
from augsearch.policy import (
    KDSettings,
    build_transform,
    op_choices,
    randaugment_block,
    sample_policy,
    trivial_block,
)
from augsearch.proxy import proxy_images, teacher_stddev
from augsearch.reuse import CleanOutputs
from augsearch.runtime import Runtime, resolve, seed_everything
from augsearch.schedule import Schedule
from augsearch.settings import Range, ScheduleSpace, Space, TrainSettings
from augsearch.space import load_space
from augsearch.storage import default_storage, open_storage
from augsearch.study import TrialContext, make_objective, make_pruner, make_sampler
from augsearch.synthesis import Source, SynthesisSettings, Synthesizer, synthetic_count
from augsearch.workspace import Workspace, trial_context

WARMUP_BATCHES = 3


def representative_transform(space: Space, channels: int):
    """Fixed stages, then the space's structure over the ops a trial may choose (policy.op_choices: the
    space's ops less ``exclude``, less colour ops on grey data): each searched op a uniform ``OneOf`` at
    m = 0.5 applied with p = 0.5 (per slot; per op of one sub-policy), RandAugment at the middle of its
    N and M, TrivialAugment as it is (policy.randaugment_block, trivial_block), Cutout at mid p and size."""
    import albumentations as A  # ops.py has set NO_ALBUMENTATIONS_UPDATE

    choices, searched = op_choices(space, channels), space.policy
    stages = [getattr(A, stage.name)(**stage.args) for stage in space.fixed]
    ops = {"slots": searched.slots, "subpolicies": searched.length}.get(searched.structure, 0)
    for _ in range(ops if choices else 0):
        stages.append(A.OneOf([make_op(name, 0.5, 1.0) for name in choices], p=0.5))
    if searched.structure == "randaugment" and searched.n is not None and searched.m is not None:
        n, m = round((searched.n.low + searched.n.high) / 2), (searched.m.low + searched.m.high) / 2
        stages.append(randaugment_block(choices, n, m))
    elif searched.structure == "trivial":
        stages.append(trivial_block(choices))
    if searched.erasing is not None:
        p, size = searched.erasing.p, searched.erasing.size
        stages.append(make_erasing((size.low + size.high) / 2, (p.low + p.high) / 2))
    return A.Compose(stages)


def representative_kd(space: Space) -> KDSettings:
    t, a = space.kd.temperature, space.kd.alpha
    temperature = math.sqrt(t.low * t.high) if t.log else (t.low + t.high) / 2
    return KDSettings(temperature, (a.low + a.high) / 2 or 0.5)  # the bench always runs the teacher


def _sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)


def _rate(step: Callable[[], int], seconds: float, runtime: Runtime, warmup: int = WARMUP_BATCHES) -> float:
    """Images per second of ``step`` (which returns how many images it handled), warm-up excluded."""
    for _ in range(warmup):
        step()
    _sync(runtime)
    images, start = 0, time.perf_counter()
    while True:
        images += step()
        _sync(runtime)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return images / elapsed


def _augment_rate(x, y, transform, batch_size: int, runtime: Runtime, seed: int, seconds: float) -> float:
    """(a): the trial's loader alone; the main process only receives the workers' batches."""
    loader = make_loader(x, y, transform, batch_size, runtime, seed)

    def forever() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from loader

    batches = forever()
    return _rate(lambda: len(next(batches)[1]), seconds, runtime)


def _augment_cost_us(x: np.ndarray, transform, batch_size: int, seconds: float) -> dict[str, float]:
    """Microseconds per image in this process: ``augment`` (compiled) and ``Compose`` per image.

    The two alternate batch by batch on the same images, and each figure is the median, so load
    from anything else on the machine falls on both alike. Two copies of the pipeline, one each.
    """
    compiled, plain = copy.deepcopy(transform), copy.deepcopy(transform)
    ways = {
        "compiled": lambda batch: augment(batch, compiled),
        "compose": lambda batch: [plain(image=image) for image in batch],
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    start, position = time.perf_counter(), 0
    while time.perf_counter() - start < seconds or len(times["compose"]) < WARMUP_BATCHES + 3:
        batch = x[position : position + batch_size]
        position = position + batch_size if position + 2 * batch_size <= len(x) else 0
        for name, way in ways.items():
            begin = time.perf_counter()
            way(batch)
            times[name].append((time.perf_counter() - begin) / len(batch) * 1e6)
    return {name: float(np.median(values[WARMUP_BATCHES:])) for name, values in times.items()}


class GpuUtilisation:
    """Mean GPU utilisation while the ``with`` block runs: the percent of time a kernel was executing,
    as nvidia-smi reports it, read from NVML (``torch.cuda.utilization``) every ``interval`` seconds
    on a thread of its own. ``mean`` is None off CUDA, or where NVML cannot be read (the
    ``nvidia-ml-py`` package missing): then nothing is sampled at all. Around (d) it also counts the
    loader's worker start and the warm-up batches, a second or so of an idle GPU: a slight underestimate.
    """

    def __init__(self, device: torch.device, interval: float = 0.2, read: Callable[[], float] | None = None):
        self.interval = interval
        self.read = read or (lambda: float(torch.cuda.utilization(device)))
        self.active = read is not None or device.type == "cuda"
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuUtilisation:
        if self.active:
            try:
                self.read()  # NVML present and readable? (ModuleNotFoundError: no pynvml)
            except Exception:
                self.active = False
                return self
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.read())
            except Exception:  # NVML stopped answering: keep what was read
                return

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


class _Timed:
    """Wraps a loader for ``train_student``: starts the clock when the first post-warm-up batch is
    asked for (the warm-up batches' work is then done) and counts the images handed out after it."""

    def __init__(self, loader, warmup: int) -> None:
        self.loader, self.warmup = loader, warmup
        self.start: float | None = None
        self.seen = self.images = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            self.seen += 1
            if self.seen == self.warmup + 1:
                self.start = time.perf_counter()
            if self.seen > self.warmup:
                self.images += len(batch.labels)
            yield batch


class _TrialStep:
    """(d): ``train_student`` over the trial's loader, timed after a warm-up, for one policy.

    With the reuse on, the teacher's clean outputs on the trial subset are computed before the clock
    starts, as a study's first trial leaves them for every later one (augsearch/reuse.py): the figure
    is a study's steady state, and the share saved is the share of the teacher's passes it skipped.
    """

    def __init__(self, space, shape, x, y, settings, normalise, teacher, kd, seed) -> None:
        self.space, self.shape, self.x, self.y, self.settings = space, shape, x, y, settings
        self.normalise, self.teacher, self.kd, self.seed = normalise, teacher, kd, seed
        self.student: torch.nn.Module | None = None

    def rate(
        self,
        transform,
        reuse: bool,
        *,
        control: StrengthControl | None = None,
        synthesis: Synthesizer | None = None,
    ) -> tuple[float, float | None, float | None]:
        """Real images per second, the share of teacher passes saved, and the GPU's mean utilisation.
        With ``control`` (a strength schedule, augsearch/control.py) the loader rebuilds ``transform``'s
        policy at each new strength, as a scheduled trial's does; with ``synthesis``, its synthetic
        images are appended to every batch (not counted)."""
        runtime = self.normalise.runtime
        clean = None
        if reuse:
            clean = CleanOutputs(("bench",), len(self.x))
            run = partial(teacher_logits, self.teacher, runtime=runtime)
            clean.fill(self.x, self.normalise, self.settings.batch_size, run)
        seed_everything(self.seed)
        self.student = build_model(self.space.student, **self.shape)
        knob = None if control is None else control.knob
        loader = make_loader(
            self.x, self.y, transform, self.settings.batch_size, runtime, self.seed, strength=knob
        )
        timed = _Timed(loader, WARMUP_BATCHES)
        with GpuUtilisation(runtime.device) as gpu:
            extra = {} if synthesis is None else {"synthesis": synthesis}
            result = train_student(
                self.student, timed, self.settings, self.normalise, self.teacher, self.kd, clean=clean,
                control=control, **extra,
            )  # fmt: skip
            _sync(runtime)
        return timed.images / (time.perf_counter() - timed.start), result.teacher_saved_share, gpu.mean


def bench_schedule(space: Space) -> Schedule:
    """The controller the bench runs: the space's adaptive settings (its shortest interval, the middle
    of its other ranges) or, for a space without one, ADA's set-point 0.6 of agreement, a step of 0.05
    every 4 steps: a controller that acts often, so its cost shows."""
    searched = space.schedule
    if "adaptive" not in searched.kinds:
        return Schedule("adaptive", initial=0.5, signal="agreement", target=0.6, step=0.05, interval=4)
    signal = searched.signals[0]
    target = searched.targets[signal]

    def middle(value: Range) -> float:
        return math.sqrt(value.low * value.high) if value.log else (value.low + value.high) / 2

    return Schedule(
        "adaptive", initial=middle(searched.initial), signal=signal, target=middle(target),
        step=middle(searched.step), interval=searched.interval.low,
    )  # fmt: skip


def _controller_rates(
    trial: _TrialStep, space: Space, channels: int, seed: int, reuse: bool
) -> dict[str, Any]:
    """(d) for one policy sampled from the space (fixed stages on), first at the constant schedule and
    then under :func:`bench_schedule`'s controller, back to back in this run: what the controller costs
    (signal reads, and a pipeline rebuilt at each new strength). The strength changes what the ops do,
    so part of a difference can be the ops' own cost at another strength, not the controller's."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial({"fixed_on": True} if space.fixed_searched else {})
    plain = replace(space, schedule=ScheduleSpace())
    policy = sample_policy(study.ask(), plain, channels)
    constant = trial.rate(build_transform(policy), reuse)[0]
    adaptive = replace(policy, schedule=bench_schedule(space))
    control = strength_control(adaptive)
    controlled = trial.rate(run_transform(adaptive, control), reuse, control=control)[0]
    return {
        "trial_step_sampled_img_s": constant,
        "trial_step_controller_img_s": controlled,
        "controller_cost": 1 - controlled / constant,
        "controller_steps": control.readings,
        "controller_strength_changes": control.changes,
        "controller_final_strength": control.value,
    }


def _stand_in_source(space, data, teacher, normalise: Normaliser, seed: int) -> Source | None:
    """The space's synthetic images for the bench: a randomly initialised generator of its recipe (its
    cost does not depend on its weights, so nothing is trained), or its ``source:`` images."""
    if space.synthesis is None:
        return None
    if space.synthesis.source is not None:
        return load_source(space.synthesis.source, data, teacher, normalise)
    torch.manual_seed(seed)
    generator = build_generator(space.synthesis.recipe, data.num_classes, data.channels, data.image_size)
    return Source(data.num_classes, generator=generator.to(normalise.runtime.device).eval())


def _synthesis_rate(
    space, source: Source, trial: _TrialStep, transform, runtime, seed: int
) -> dict[str, Any]:
    """(d'): the trial step with synthesis at the space's largest ratio (augmented if the space allows
    it: the dearer choice). Real images per second, and every image trained on."""
    searched = space.synthesis
    settings = SynthesisSettings(searched.ratio.high, augment=True in searched.augment)
    synth = Synthesizer(source, settings, copy.deepcopy(transform), seed, runtime.device)
    real = trial.rate(transform, runtime.teacher_reuse, synthesis=synth)[0]
    extra = synthetic_count(trial.settings.batch_size, settings.ratio) / trial.settings.batch_size
    return {
        "synthesis_ratio": settings.ratio,
        "synthesis_augment": settings.augment,
        "trial_step_synthesis_img_s": real,
        "trial_step_synthesis_all_img_s": real * (1 + extra),
    }


def _optuna_seconds_per_trial(context: TrialContext) -> float:
    """Mean wall seconds per trial of a real SQLite study running the trials' own objective
    (:func:`augsearch.study.make_objective`) with the training replaced by seeded random accuracies, one
    per epoch, and the proxy off (it is measured on its own): sampling, storage writes, pruning and the
    objective's own work, nothing of it copied here."""
    rng = np.random.default_rng(context.seed)

    def pretend_to_train(
        student: Any,
        batches: Any,
        settings: TrainSettings,
        normalise: Normaliser,
        teacher: Any = None,
        kd: KDSettings | None = None,
        evaluation: Any = None,
        on_report: Callable[[int, float], None] | None = None,
        **options: Any,
    ) -> TrainResult:
        """distill.train_student's signature; makes its reports with random accuracies, trains nothing."""
        assert on_report is not None  # the objective always wants its reports
        result = TrainResult()
        for step in range(1, settings.reports + 1):
            result.val_accuracy.append(float(rng.uniform(0.5, 0.9)))
            on_report(step, result.val_accuracy[-1])
        return result

    space = context.space
    quiet = replace(space, proxy=replace(space.proxy, batches=0))
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(default_storage(Path(folder)))
        study = optuna.create_study(
            storage=storage,
            sampler=make_sampler(space, context.seed),
            pruner=make_pruner(space),
            direction="maximize",
        )
        objective = make_objective(replace(context, space=quiet, train=pretend_to_train))
        start = time.perf_counter()
        study.optimize(objective, n_trials=space.study.trials, gc_after_trial=False)
        seconds = (time.perf_counter() - start) / space.study.trials
        storage.engine.dispose()
    return seconds


def _peak_rss_mb() -> dict[str, float]:
    """High-water resident set sizes (Linux reports KiB): this process, and its largest ended child."""
    gc.collect()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main": round(own, 1), "largest_worker": round(children, 1)}


def bench(
    space_name: str = "default",
    device: str = "auto",
    seconds: float = 5.0,
    data_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    loader_workers: int | None = None,
    stand_in_data: bool = False,
) -> dict[str, Any]:
    """Measure everything the module docstring lists; a JSON-ready dict of figures.

    ``loader_workers`` overrides the runtime's choice, to compare worker counts on one machine.
    ``stand_in_data`` measures on generated images of the dataset's shape (:func:`augsearch.data.stand_in`)
    instead of loading it: for a machine without the dataset (speed only; the bench never scores accuracy).
    """
    say = progress or (lambda line: None)
    space = load_space(space_name)
    runtime = resolve(device, loader_workers)
    seed = space.study.seed
    if stand_in_data:
        data = load_dataset("synthetic", synthetic=stand_in(space.dataset.name, space.dataset.synthetic))
    else:
        data = load_dataset(space.dataset.name, data_dir, synthetic=space.dataset.synthetic)
    normalise = Normaliser.fit(data.x_train, runtime)
    shape = data.model_shape
    seed_everything(seed)
    plain_teacher = freeze(build_model(space.teacher.model, **shape))
    teacher = inference_teacher(plain_teacher, runtime)
    # The trials' own split, subset and objective (workspace.trial_context), without preview artifacts.
    source = _stand_in_source(space, data, teacher, normalise, seed)  # with synthesis: (d') and the objective
    context = trial_context(Workspace(space, data, runtime, normalise, seed), teacher, None, source)
    subset, val_index = context.train_index, context.val_index
    x_sub, y_sub = data.x_train[subset], data.y_train[subset]
    batch_size = min(space.trial.batch_size, len(subset))
    transform = representative_transform(space, data.channels)
    kd = representative_kd(space)
    settings = replace(space.trial, batch_size=batch_size)
    figures: dict[str, Any] = {
        "space": space.name,
        "data": f"generated stand-in for {space.dataset.name}" if stand_in_data else data.name,
        "device": runtime.describe(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "teacher": space.teacher.model,
        "student": space.student,
        "batch_size": batch_size,
        "loader_workers": runtime.loader_workers,
        "trial_images": len(subset) * space.trial.epochs,
        "seconds_per_figure": seconds,
    }

    say("(a) augmentation alone, through the loader's workers")
    figures["augment_img_s"] = _augment_rate(x_sub, y_sub, transform, batch_size, runtime, seed, seconds)
    cost = _augment_cost_us(x_sub, transform, batch_size, seconds / 2)
    figures["augment_us_per_image"] = cost["compiled"]
    figures["compose_us_per_image"] = cost["compose"]
    figures["augment_compiled"] = compile_pipeline(transform) is not None

    ready = normalise(torch.from_numpy(augment(x_sub[:batch_size], transform)))
    labels = torch.from_numpy(y_sub[:batch_size]).to(runtime.device)
    targets = teacher_logits(teacher, ready, runtime)

    say("(b) student training step alone")
    student = build_model(space.student, **shape).to(runtime.device, memory_format=runtime.memory_format)
    optimiser, _ = make_optimiser(student, settings, 10**6)

    def student_step() -> int:
        with runtime.autocast():
            logits = student(ready)
        loss = hinton_loss(logits, targets, labels, kd.temperature, kd.alpha)["total"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return batch_size

    figures["student_step_img_s"] = _rate(student_step, seconds, runtime)

    say("(c) teacher inference alone")
    figures["teacher_img_s"] = _rate(lambda: len(teacher_logits(teacher, ready, runtime)), seconds, runtime)
    bound = 1 / (1 / figures["student_step_img_s"] + 1 / figures["teacher_img_s"])
    figures["compute_bound_img_s"] = bound

    say("(d) full KD trial step (train_student), with and without the teacher's reuse")
    per_epoch = len(x_sub) // batch_size * batch_size
    epochs = max(2, math.ceil((seconds * bound + (WARMUP_BATCHES + 1) * batch_size) / max(1, per_epoch)))
    trial = _TrialStep(
        space, shape, x_sub, y_sub, replace(settings, epochs=epochs), normalise, teacher, kd, seed
    )
    figures["trial_step_img_s"], saved, gpu = trial.rate(transform, runtime.teacher_reuse)
    figures["teacher_saved_share"] = saved
    figures["trial_step_no_reuse_img_s"] = trial.rate(transform, reuse=False)[0]
    figures["trial_step_none_img_s"], figures["teacher_saved_share_none"], _ = trial.rate(None, reuse=True)
    say("(d) again: a sampled policy at constant strength, then under the adaptive controller")
    figures |= _controller_rates(trial, space, data.channels, seed, runtime.teacher_reuse)
    if source is not None:
        say("(d') the same trial step with the space's largest synthetic share")
        figures |= _synthesis_rate(space, source, trial, transform, runtime, seed)
    figures["efficiency"] = figures["trial_step_img_s"] / bound
    if runtime.device.type == "cpu":  # augmentation and the models share the same cores
        core_seconds = figures["cores"] / bound + max(1, runtime.loader_workers) / figures["augment_img_s"]
        figures["shared_cpu_bound_img_s"] = figures["cores"] / core_seconds
        figures["shared_cpu_efficiency"] = figures["trial_step_img_s"] / figures["shared_cpu_bound_img_s"]
    else:  # the GPU computes while the cores augment: the slower of the two bounds the step
        figures["pipeline_bound_img_s"] = min(figures["augment_img_s"], bound)
        figures["pipeline_efficiency"] = figures["trial_step_img_s"] / figures["pipeline_bound_img_s"]
        figures["gpu_utilisation_percent"] = gpu
    workers_rss = _peak_rss_mb()  # the workers have ended: their high-water mark is in

    say("(e) naive loop: per-image augmentation in the main process, teacher with autograd on")
    figures["naive_img_s"] = _naive_rate(
        space, data, x_sub, y_sub, plain_teacher, kd, normalise, settings, seconds
    )
    figures["speedup_over_naive"] = figures["trial_step_img_s"] / figures["naive_img_s"]

    say("proxy, evaluation and Optuna's own cost per trial")
    images = proxy_images(x_sub, space.proxy.batches or 4, batch_size, seed)
    group = min(batch_size, len(images) // (space.proxy.batches or 4))
    start = time.perf_counter()
    if space.proxy.batches:
        teacher_stddev(teacher, images, transform, normalise, group)
    figures["proxy_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(trial.student, data.x_train[val_index], data.y_train[val_index], normalise)
    figures["evaluation_seconds"] = time.perf_counter() - start
    trial_seconds = (
        figures["proxy_seconds"]
        + figures["trial_images"] / figures["trial_step_img_s"]
        + space.trial.reports * figures["evaluation_seconds"]  # one validation per report
    )
    optuna_seconds = _optuna_seconds_per_trial(context)
    figures["trial_seconds_estimate"] = trial_seconds
    figures["optuna_seconds_per_trial"] = optuna_seconds
    figures["optuna_fraction"] = optuna_seconds / (trial_seconds + optuna_seconds)
    # With no loader workers there is no worker to report: the children's high-water mark then shows only
    # a short-lived child started while torch is imported (434 MB here right after `import torch`).
    worker = workers_rss["largest_worker"] if runtime.loader_workers else None
    figures["peak_rss_mb"] = {**_peak_rss_mb(), "largest_worker": worker}
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in figures.items()}


def _naive_rate(space, data, x_sub, y_sub, teacher, kd, normalise, settings, seconds) -> float:
    """(e): what a first script does; same models, data, policy and loss as (d); see the module docstring.

    Augmentation is the plain ``Compose`` called image by image, as such a script calls it: never
    ``loader.augment``, so the loader's compiled path does not speed up the baseline.
    """
    runtime = normalise.runtime
    naive_teacher = copy.deepcopy(teacher).to(runtime.device, memory_format=torch.contiguous_format)
    for parameter in naive_teacher.parameters():
        parameter.requires_grad_(True)  # a teacher nobody froze: autograd records its forward pass
    shape = data.model_shape
    student = build_model(space.student, **shape).to(runtime.device)
    optimiser, _ = make_optimiser(student, settings, 10**6)
    transform = representative_transform(space, data.channels)
    transform.set_random_seed(space.study.seed)
    order = np.random.default_rng(space.study.seed).permutation(len(x_sub))
    position = 0

    def step() -> int:
        nonlocal position
        if position + settings.batch_size > len(order):
            position = 0
        index = order[position : position + settings.batch_size]
        position += settings.batch_size
        images = []
        for i in index:  # one image at a time, in the training loop, made a tensor as ToTensor does
            image = transform(image=x_sub[i])["image"]
            image = image if image.ndim == 3 else image[..., None]
            images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous().float())
        batch = (torch.stack(images).to(runtime.device) - normalise.mean) / normalise.std
        labels = torch.from_numpy(y_sub[index]).to(runtime.device)
        targets = naive_teacher(batch).detach()
        logits = student(batch)
        loss = hinton_loss(logits, targets, labels, kd.temperature, kd.alpha)["total"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return len(index)

    return _rate(step, seconds, runtime)


def format_figures(figures: dict[str, Any]) -> str:
    """The bench's figures as lines a person reads."""
    rss = figures["peak_rss_mb"]
    rows = [
        ("space / device", f"{figures['space']} / {figures['device']}"),
        ("data", figures["data"]),
        ("teacher -> student", f"{figures['teacher']} -> {figures['student']}"),
        ("trial batch size", f"{figures['batch_size']}"),
        (
            f"(a) augmentation alone ({figures['loader_workers']} workers)",
            f"{figures['augment_img_s']:,.0f} img/s",
        ),
        (
            "    per image: augment / plain Compose",
            f"{figures['augment_us_per_image']:.0f} / {figures['compose_us_per_image']:.0f} us"
            + ("" if figures["augment_compiled"] else " (not compiled: Compose applies it)"),
        ),
        ("(b) student training step alone", f"{figures['student_step_img_s']:,.0f} img/s"),
        ("(c) teacher inference alone", f"{figures['teacher_img_s']:,.0f} img/s"),
        ("compute bound 1/(1/b + 1/c)", f"{figures['compute_bound_img_s']:,.0f} img/s"),
        ("(d) full KD trial step", f"{figures['trial_step_img_s']:,.0f} img/s"),
        ("    teacher passes saved by the reuse", _share(figures["teacher_saved_share"])),
        ("    without the reuse", f"{figures['trial_step_no_reuse_img_s']:,.0f} img/s"),
        (
            "    policy none: d, teacher passes saved",
            f"{figures['trial_step_none_img_s']:,.0f} img/s, {_share(figures['teacher_saved_share_none'])}",
        ),
        (
            "    sampled policy: constant / adaptive controller",
            f"{figures['trial_step_sampled_img_s']:,.0f} / "
            f"{figures['trial_step_controller_img_s']:,.0f} img/s "
            f"({figures['controller_cost']:+.1%} cost; {figures['controller_steps']} controller steps, "
            f"{figures['controller_strength_changes']} rebuilds, final strength "
            f"{figures['controller_final_strength']:.2f})",
        ),
        *(
            [
                (
                    f"    synthesis at ratio {figures['synthesis_ratio']:g}: real, all images",
                    f"{figures['trial_step_synthesis_img_s']:,.0f} img/s, "
                    f"{figures['trial_step_synthesis_all_img_s']:,.0f} img/s",
                )
            ]
            if "trial_step_synthesis_img_s" in figures
            else []
        ),
        ("efficiency d / bound", f"{figures['efficiency']:.3f}"),
        *(
            [
                ("bound with augmentation on the cores", f"{figures['shared_cpu_bound_img_s']:,.0f} img/s"),
                ("efficiency d / that bound", f"{figures['shared_cpu_efficiency']:.3f}"),
            ]
            if "shared_cpu_bound_img_s" in figures
            else []
        ),
        *(
            [
                ("bound min(a, compute bound)", f"{figures['pipeline_bound_img_s']:,.0f} img/s"),
                ("efficiency d / that bound", f"{figures['pipeline_efficiency']:.3f}"),
                ("GPU utilisation during (d)", _percent(figures["gpu_utilisation_percent"])),
            ]
            if "pipeline_bound_img_s" in figures
            else []
        ),
        ("(e) naive loop", f"{figures['naive_img_s']:,.0f} img/s"),
        ("speed-up d / e", f"{figures['speedup_over_naive']:.2f}x"),
        ("proxy (T. stddev) per trial", f"{figures['proxy_seconds']:.3f} s"),
        ("evaluation per report (one validation)", f"{figures['evaluation_seconds']:.3f} s"),
        ("trial wall time (estimate)", f"{figures['trial_seconds_estimate']:.2f} s"),
        (
            "Optuna overhead per trial",
            f"{figures['optuna_seconds_per_trial'] * 1000:.1f} ms, "
            f"{figures['optuna_fraction']:.2%} of a trial",
        ),
        (
            "peak RSS: main / largest worker",
            f"{rss['main']:,.0f} MB / "
            + ("no workers" if rss["largest_worker"] is None else f"{rss['largest_worker']:,.0f} MB"),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _share(value: float | None) -> str:
    return "reuse off" if value is None else f"{value:.1%}"


def _percent(value: float | None) -> str:
    return "not read (NVML: pip install nvidia-ml-py)" if value is None else f"{value:.0f}%"
