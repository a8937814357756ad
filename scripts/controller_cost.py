"""The strength controller's cost (issue 14), measured two ways on Fashion-MNIST:

1. interleaved pairs of ``augsearch bench``'s (d) trial step for one policy sampled from the ``adaptive``
   space, at constant strength and under the adaptive controller (``bench._controller_rates``), on 2,048
   images for 2 epochs, repeated to show the machine's noise;
2. the controller's own work in this process: one rebuild (``build_transform_at`` + ``compile_pipeline``),
   one controller step with its signal read, against augmenting one batch of 128.

Usage: ``python scripts/controller_cost.py [PAIRS]`` (default 3) from the repository root.
"""

import dataclasses
import json
import sys
import time

import numpy as np
import optuna
import torch

from augsearch import bench
from augsearch.compiled import compile_pipeline
from augsearch.control import strength_control
from augsearch.data import load_dataset
from augsearch.distill import freeze, inference_teacher
from augsearch.loader import Normaliser, augment
from augsearch.models import build_model
from augsearch.policy import build_transform_at, sample_policy
from augsearch.runtime import resolve, seed_everything
from augsearch.schedule import Schedule
from augsearch.settings import ScheduleSpace
from augsearch.space import load_space

space = load_space("adaptive")
runtime = resolve("cpu", None)
data = load_dataset("fashion-mnist")
x, y = data.x_train[:2048], data.y_train[:2048]
normalise = Normaliser.fit(data.x_train, runtime)
seed_everything(0)
teacher = inference_teacher(freeze(build_model(space.teacher.model, **data.model_shape)), runtime)
settings = dataclasses.replace(space.trial, epochs=2, subset=None)
kd = bench.representative_kd(space)
step = bench._TrialStep(space, data.model_shape, x, y, settings, normalise, teacher, kd, 0)
ratios = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    figures = bench._controller_rates(step, space, data.channels, 0, runtime.teacher_reuse)
    ratios.append(figures["trial_step_controller_img_s"] / figures["trial_step_sampled_img_s"])
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}), flush=True)
print("controller / constant img/s per pair:", [round(r, 3) for r in ratios], "median", np.median(ratios))

study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
study.enqueue_trial({"fixed_on": True})
policy = sample_policy(study.ask(), dataclasses.replace(space, schedule=ScheduleSpace()), 1)
policy = dataclasses.replace(policy, schedule=Schedule("adaptive", initial=0.5, step=0.05, interval=1))
n = 200
start = time.perf_counter()
for index in range(n):
    compile_pipeline(build_transform_at(policy, (index % 20) / 20))
rebuild = (time.perf_counter() - start) / n
control = strength_control(policy)
control.begin_epoch(0, 1, [])
logits, targets = torch.randn(128, 10), torch.randn(128, 10)
start = time.perf_counter()
for _ in range(5 * n):
    control.observe(logits, targets, torch.tensor(1.0))
controller_step = (time.perf_counter() - start) / (5 * n)
images = np.random.default_rng(0).integers(0, 256, (128, 28, 28, 1), dtype=np.uint8)
transform = build_transform_at(policy, 1.0)
transform.set_random_seed(0)
start = time.perf_counter()
for _ in range(10):
    augment(images, transform)
batch = (time.perf_counter() - start) / 10
print(
    f"rebuild {rebuild * 1e3:.1f} ms; controller step with a signal read {controller_step * 1e3:.2f} ms; "
    f"augmenting one batch of 128 {batch * 1e3:.1f} ms"
)
