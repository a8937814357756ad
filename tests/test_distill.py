import dataclasses
import math

import numpy as np
import pytest
import torch

from augsearch.distill import (
    NonFiniteLoss,
    evaluate,
    hinton_loss,
    inference_teacher,
    predict,
    teacher_logits,
    train_student,
)
from augsearch.fusion import ConvReLU
from augsearch.loader import Normaliser, make_loader
from augsearch.models import build_model
from augsearch.policy import KDSettings
from augsearch.runtime import resolve
from augsearch.space import TrainSettings


def _softmax(v: list[float]) -> list[float]:
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_hinton_loss_matches_hand_computation():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 3.0, 0.5]])
    y = torch.tensor([0, 2])
    temperature, alpha = 2.0, 0.7
    kl = 0.0
    ce = 0.0
    for row in range(2):
        ps = _softmax([v / temperature for v in s[row].tolist()])
        pt = _softmax([v / temperature for v in t[row].tolist()])
        kl += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
        ce += -math.log(_softmax(s[row].tolist())[y[row]])
    kl, ce = kl / 2, ce / 2
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    loss = hinton_loss(s, t, y, temperature, alpha)
    assert loss["total"].item() == pytest.approx(expected, rel=1e-5)
    assert loss["kd"].item() == pytest.approx(temperature**2 * kl, rel=1e-5)
    assert loss["ce"].item() == pytest.approx(ce, rel=1e-5)


def test_hinton_loss_without_teacher_is_cross_entropy():
    s, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert hinton_loss(s, None, y, 4.0, 0.9)["total"].item() == pytest.approx(ce.item())
    assert hinton_loss(s, torch.randn(4, 5), y, 4.0, 0.0)["total"].item() == pytest.approx(ce.item())


def test_teacher_logits_are_usable_in_the_student_graph():
    runtime = resolve("cpu", 0)
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=3, image_size=16).eval()
    student = build_model("cnn-tiny", in_channels=1, num_classes=3, image_size=16)
    x = torch.randn(4, 1, 16, 16)
    targets = teacher_logits(teacher, x, runtime)
    loss = hinton_loss(student(x), targets, torch.tensor([0, 1, 2, 0]), 2.0, 0.5)["total"]
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize(
    ("name", "channels", "size"), [("cnn-teacher", 1, 28), ("resnet8", 3, 32), ("wrn-16-2", 3, 16)]
)
def test_inference_teacher_folds_batchnorm_and_keeps_the_logits(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, num_classes=10, image_size=size)
    for module in model.modules():  # running statistics unlike a fresh net's, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    runtime = dataclasses.replace(resolve("cpu", 0), teacher_dtype=None)
    teacher = inference_teacher(model, runtime)
    x = torch.randn(8, channels, size, size)
    with torch.inference_mode():
        expected = model(x)
    assert torch.allclose(teacher_logits(teacher, x, runtime), expected, rtol=1e-4, atol=1e-4)
    batchnorms = [m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    all_batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # every BN that follows a conv is gone; WRN's pre-activation BNs (before their conv) remain
    assert len(batchnorms) < all_batchnorms if name == "wrn-16-2" else not batchnorms
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the saved model untouched


@pytest.mark.parametrize(
    ("name", "channels", "size", "fused"), [("cnn-teacher", 1, 28, 4), ("resnet8", 3, 32, 4)]
)
def test_the_fp32_cpu_teacher_fuses_each_conv_with_its_relu_and_keeps_the_logits(name, channels, size, fused):
    """cnn-teacher: all four conv-ReLU pairs; resnet8: the stem and each block's first conv (the second
    conv's ReLU comes after the residual sum). Not under bf16 autocast, which the fused op escapes."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, num_classes=10, image_size=size).eval()
    fp32 = dataclasses.replace(resolve("cpu", 0), teacher_dtype=None)
    teacher = inference_teacher(model, fp32)
    assert sum(isinstance(m, ConvReLU) for m in teacher.modules()) == fused
    assert not any(isinstance(m, torch.nn.ReLU) for m in teacher.modules() if name == "cnn-teacher")
    x = torch.randn(16, channels, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = model(x)
    torch.testing.assert_close(teacher_logits(teacher, x, fp32), expected, rtol=1e-4, atol=1e-4)
    bf16 = dataclasses.replace(fp32, teacher_dtype=torch.bfloat16)
    assert not any(isinstance(m, ConvReLU) for m in inference_teacher(model, bf16).modules())


def test_inference_teacher_keeps_a_model_torch_fx_cannot_trace():
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: symbolic tracing fails
                x = -x
            return self.bn(self.conv(x)).flatten(1)

    model = Branchy()
    teacher = inference_teacher(model, resolve("cpu", 0))
    assert teacher is model and not model.training


def _toy(n: int = 256, size: int = 12):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 40, (n, size, size, 1)).astype(np.uint8)
    x[y == 1, : size // 2] += 150  # class 1: bright top half
    return x, y.astype(np.int64)


def _toy_run(settings: TrainSettings):
    """A seeded cnn-tiny trained on the toy data, validated on it; its reports as (step, accuracy)."""
    runtime = resolve("cpu", 0)
    x, y = _toy()
    normalise = Normaliser.fit(x, runtime)
    torch.manual_seed(0)
    student = build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12)
    seen = []
    result = train_student(
        student,
        make_loader(x, y, None, 32, runtime, 0),
        settings,
        normalise,
        evaluation=(x, y),
        on_report=lambda step, accuracy: seen.append((step, accuracy)),
    )
    return student, seen, result, normalise, x, y


def test_train_student_learns_and_reports_each_epoch():
    student, seen, result, normalise, x, y = _toy_run(TrainSettings(epochs=2, lr=0.1))
    assert [e for e, _ in seen] == [1, 2]
    assert result.val_accuracy[-1] > 0.9
    assert evaluate(student, x, y, normalise) == pytest.approx(result.val_accuracy[-1])
    assert result.images == 2 * (256 // 32) * 32

    # predict gives the same accuracy and the softmax of the very logits it took the top-1 of
    accuracy, probabilities = predict(student, x, y, normalise, batch_size=100)
    assert accuracy == evaluate(student, x, y, normalise)
    assert probabilities.shape == (256, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities.argmax(axis=1) == y).mean() == pytest.approx(accuracy)
    with torch.no_grad():
        logits = student.eval()(normalise(torch.from_numpy(x[:5])))
    assert np.allclose(probabilities[:5], torch.softmax(logits, 1).double().numpy(), atol=1e-6)


def test_non_finite_loss_stops_training():
    runtime = resolve("cpu", 0)
    x, y = _toy(64)
    normalise = Normaliser.fit(x, runtime)
    student = build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12)
    teacher = build_model("cnn-tiny", in_channels=1, num_classes=2, image_size=12)
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss):
        train_student(
            student,
            make_loader(x, y, None, 16, runtime, 0),
            TrainSettings(epochs=1),
            normalise,
            teacher,
            KDSettings(2.0, 0.5),
        )


def test_reports_within_an_epoch_leave_the_training_unchanged():
    """reports_per_epoch = 2 validates after half of each epoch as well (steps 1-4 for 2 epochs); the
    evaluation draws no random number and restores train mode, so the student ends bit for bit as with
    one report an epoch, and the report at each epoch's end is the same accuracy."""
    one, seen_one, *_ = _toy_run(TrainSettings(epochs=2, lr=0.1, reports_per_epoch=1))
    two, seen_two, result_two, *_ = _toy_run(TrainSettings(epochs=2, lr=0.1, reports_per_epoch=2))
    assert [step for step, _ in seen_two] == [1, 2, 3, 4] and len(result_two.val_accuracy) == 4
    assert [seen_two[1][1], seen_two[3][1]] == [accuracy for _, accuracy in seen_one]
    for a, b in zip(one.state_dict().values(), two.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_reports_every_few_epochs_leave_the_training_unchanged():
    """epochs_per_report = 2 over 5 epochs validates after epochs 2, 4 and the last, 5 (steps 1-3), with
    the accuracies a run validating every epoch sees there; the student ends bit for bit the same."""
    every, seen_every, *_ = _toy_run(TrainSettings(epochs=5, lr=0.1))
    few, seen_few, result_few, *_ = _toy_run(TrainSettings(epochs=5, lr=0.1, epochs_per_report=2))
    assert [step for step, _ in seen_few] == [1, 2, 3] and len(result_few.val_accuracy) == 3
    assert [accuracy for _, accuracy in seen_few] == [seen_every[i][1] for i in (1, 3, 4)]
    for a, b in zip(every.state_dict().values(), few.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_report_counts_and_epochs_per_report():
    """The pruner's steps: epochs x r, or the epochs over K rounded up (the last epoch always reports);
    a report's epoch; the run key leaves both out at 1; the two ways cannot be combined."""
    assert TrainSettings(epochs=120, epochs_per_report=20).reports == 6
    assert TrainSettings(epochs=5, epochs_per_report=2).reports == 3
    assert TrainSettings(epochs=2, reports_per_epoch=2).reports == 4
    assert [TrainSettings(epochs=5, epochs_per_report=2).epochs_at(k) for k in (1, 2, 3)] == [2, 4, 5]
    assert TrainSettings(epochs=2, reports_per_epoch=2).epochs_at(1) == 0.5
    assert [TrainSettings(epochs=5, epochs_per_report=2).validates_after(e) for e in range(5)] == [
        False, True, False, True, True
    ]  # fmt: skip
    assert "epochs_per_report" not in TrainSettings(epochs=5).to_dict()
    assert TrainSettings(epochs=5, epochs_per_report=2).to_dict()["epochs_per_report"] == 2
    with pytest.raises(ValueError, match="cannot both"):
        TrainSettings(epochs=5, epochs_per_report=2, reports_per_epoch=2)


def test_midway_reports_fall_inside_the_epoch():
    from augsearch.distill import _midway

    assert _midway(4, 1) == {}
    assert _midway(4, 2) == {2: 0.5}
    assert _midway(8, 4) == {2: 0.25, 4: 0.5, 6: 0.75}
    assert _midway(1, 2) == {}  # one batch: nothing before the epoch's end
