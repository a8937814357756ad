"""`augsearch bench` on the smoke space, on CPU: every figure is measured and printed (no speed checks)."""

import contextlib
import json
import time

import pytest
import torch
from conftest import run_cli, smoke_variant

from augsearch.bench import GpuUtilisation, format_figures, representative_kd, representative_transform
from augsearch.cli import main
from augsearch.data import SyntheticSpec, stand_in
from augsearch.errors import UserError
from augsearch.policy import op_choices
from augsearch.space import load_space

RATES = (
    "augment_img_s",
    "student_step_img_s",
    "teacher_img_s",
    "compute_bound_img_s",
    "trial_step_img_s",
    "trial_step_no_reuse_img_s",
    "trial_step_none_img_s",
)


def _with_synthesis(raw):
    recipe = {"epochs": 1, "width": 4, "z_dim": 8, "epoch_images": 64, "batch_size": 32}
    raw["synthesis"] = {"ratio": {"low": 0.0, "high": 0.5}, "augment": [True, False], "recipe": recipe}


def test_bench_measures_and_prints_every_figure(tmp_path):
    """One bench run of the smoke space with a synthesis section, on generated stand-in data (for the
    smoke space the same synthetic images its dataset is, so every figure is the ordinary one; the run
    says which data it used). (d') runs on a freshly initialised generator: nothing trained or cached."""
    space = smoke_variant(tmp_path, _with_synthesis)
    work = tmp_path / "work"
    work.mkdir()
    args = ("--space", str(space), "--device", "cpu", "--seconds", "0.2", "--stand-in-data", "--json")
    result = run_cli("bench", *args, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["data"] == "generated stand-in for synthetic"
    assert figures["synthesis_ratio"] == 0.5 and figures["synthesis_augment"] is True
    assert figures["trial_step_synthesis_img_s"] > 0 and figures["trial_step_controller_img_s"] > 0
    # at a synthetic share of one half, the images trained on are twice the real ones
    real = figures["trial_step_synthesis_img_s"]
    assert figures["trial_step_synthesis_all_img_s"] == pytest.approx(2 * real)
    assert "synthesis at ratio 0.5: real, all images" in format_figures(figures)
    for key in (*RATES, "naive_img_s", "efficiency", "speedup_over_naive", "optuna_seconds_per_trial"):
        assert figures[key] > 0, key
    assert figures["augment_compiled"] is True  # the smoke policy takes the loader's compiled path
    assert figures["augment_us_per_image"] > 0 and figures["compose_us_per_image"] > 0
    assert 0 < figures["optuna_fraction"] < 1
    assert figures["peak_rss_mb"]["main"] > 0
    assert figures["teacher_saved_share_none"] == 1.0  # `none` changes no image: every output reused
    assert 0 <= figures["teacher_saved_share"] < 1
    bound = 1 / (1 / figures["student_step_img_s"] + 1 / figures["teacher_img_s"])
    assert abs(figures["compute_bound_img_s"] - bound) / bound < 1e-3
    table = format_figures(figures)
    labels = (
        "(a)",
        "per image: augment / plain Compose",
        "(b)",
        "(c)",
        "(d)",
        "(e)",
        "teacher passes saved",
        "without the reuse",
        "policy none",
        "efficiency",
        "on the cores",
        "speed-up",
        "Optuna",
        "RSS",
    )
    for label in labels:
        assert label in table
    assert not list(work.iterdir())  # the bench writes nothing
    # the rows a CUDA run prints instead of the shared-cores ones (no GPU here: the figures are made up)
    cuda = {k: v for k, v in figures.items() if not k.startswith("shared_cpu")}
    cuda |= {"pipeline_bound_img_s": 5000.0, "pipeline_efficiency": 0.72, "gpu_utilisation_percent": 63.4}
    table = format_figures(cuda)
    assert "on the cores" not in table and "0.720" in table
    assert [line.split()[-1] for line in table.splitlines() if "GPU utilisation" in line] == ["63%"]
    assert "not read (NVML" in format_figures(cuda | {"gpu_utilisation_percent": None})


def test_gpu_utilisation_averages_samples_taken_while_the_block_runs():
    readings = iter([0.0, 50.0, 70.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0, 90.0] + [90.0] * 1000)
    with GpuUtilisation(torch.device("cuda"), interval=0.01, read=lambda: next(readings)) as gpu:
        time.sleep(0.1)
    assert gpu.samples and gpu.samples[0] == 50.0  # the first read only checks that NVML answers
    assert gpu.mean == sum(gpu.samples) / len(gpu.samples)
    count = len(gpu.samples)
    time.sleep(0.05)
    assert len(gpu.samples) == count  # the sampling thread stopped with the block


def test_gpu_utilisation_is_none_off_cuda_or_without_nvml():
    with GpuUtilisation(torch.device("cpu")) as gpu:
        pass
    assert gpu.mean is None and gpu._thread is None

    def no_nvml() -> float:
        raise ModuleNotFoundError("No module named 'pynvml'")

    with GpuUtilisation(torch.device("cuda"), interval=0.01, read=no_nvml) as gpu:
        time.sleep(0.03)
    assert gpu.mean is None and gpu._thread is None


def test_stand_in_data_has_the_datasets_shape():
    assert stand_in("cifar10") == SyntheticSpec(10, 3, 32, train_size=50_000, test_size=1000)
    assert (stand_in("fashion-mnist").channels, stand_in("fashion-mnist").image_size) == (1, 28)
    assert stand_in("cifar100").num_classes == 100
    own = SyntheticSpec(num_classes=3, train_size=60)
    assert stand_in("synthetic", own) is own
    with pytest.raises(UserError, match="no stand-in for dataset 'npz:x"):
        stand_in("npz:x.npz")
    # the bench on stand-in data: test_bench_measures_and_prints_every_figure


def test_bench_refuses_bad_input_with_one_line(capsys):
    bad = (("--seconds", "0"), ("--space", "no-such-space"), ("--device", "tpu"), ("--loader-workers", "-1"))
    for args in bad:
        with contextlib.suppress(SystemExit):  # argparse exits; UserError returns 2
            assert main(["bench", *args]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_representative_policy_uses_every_slot_at_mid_strength():
    space = load_space("smoke")
    transform = representative_transform(space, channels=1)
    assert len(transform.transforms) == len(space.fixed) + space.policy.slots
    assert all(stage.p == 0.5 for stage in transform.transforms[len(space.fixed) :])
    assert representative_kd(space).alpha > 0


def test_representative_policy_uses_the_trials_op_choices_for_every_structure(tmp_path):
    """The ops a trial may choose (policy.op_choices, so ``exclude`` holds) and each structure's block."""
    space = load_space(str(smoke_variant(tmp_path, lambda r: r["policy"].update(exclude=["InvertImg"]))))
    names = {type(op).__name__ for op in representative_transform(space, 1).transforms[-1].transforms}
    assert "InvertImg" not in names and names <= set(op_choices(space, 1))
    for name in ("randaugment", "trivialaugment", "autoaugment-like"):
        shipped = load_space(name)
        stages = representative_transform(shipped, 3).transforms[len(shipped.fixed) :]
        assert stages, name  # the searched part is there, whatever the structure
