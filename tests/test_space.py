import pytest
from conftest import smoke_variant

from augsearch.errors import UserError
from augsearch.space import find_space, load_space, space_names


def test_shipped_spaces_load():
    names = space_names()
    assert {"default", "smoke"} <= set(names)
    for name in names:
        space = load_space(name)
        assert space.name == name
        assert space.study.trials >= 1
        assert len(space.sha256) == 64


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(colour="blue"), "colour: unknown key"),
        (lambda r: r["trial"].update(epochs="two"), "trial.epochs: expected int"),
        (lambda r: r["kd"]["alpha"].update(low=0.9, high=0.1), "kd.alpha: low 0.9 is greater than high 0.1"),
        (lambda r: r["kd"]["alpha"].update(high=1.5), "kd.alpha.high: expected a value in [0.0, 1.0]"),
        (lambda r: r["policy"].update(ops=["Rotate", "Spin"]), "unknown op 'Spin'"),
        (lambda r: r.pop("student"), "student: missing required key"),
        (lambda r: r["fixed"].append({"name": "NoSuchTransform"}), "unknown albumentations class"),
        (lambda r: r["study"].update(pruner="never"), "study.pruner: expected one of"),
    ],
)
def test_bad_spaces_give_one_line_naming_file_and_key(tmp_path, mutate, expected):
    path = smoke_variant(tmp_path, mutate)
    with pytest.raises(UserError) as error:
        load_space(str(path))
    message = str(error.value)
    assert expected in message and str(path) in message
    assert "\n" not in message


def test_python_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_space(str(path))
    assert not marker.exists()


def test_unknown_space_name_lists_choices():
    with pytest.raises(UserError, match=r"unknown search space 'nope'; choose one of .*default"):
        find_space("nope")
