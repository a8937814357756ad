"""One bound per policy setting (augsearch/bounds.py): the space parser, the policy-file checks and the
policy dataclasses accept exactly the same values."""

import json

import pytest
from conftest import smoke_variant

from augsearch.bounds import MIX_ALPHA, TEMPERATURE
from augsearch.errors import UserError
from augsearch.export import load_policy, write_policy
from augsearch.mixing import MixSettings
from augsearch.policy import KDSettings, Policy
from augsearch.space import load_space

MIX = {"kinds": ["none", "mixup"], "p": {"low": 0.0, "high": 1.0}}


def _space_refuses(tmp_path, mutate, where):
    with pytest.raises(UserError, match=where):
        load_space(str(smoke_variant(tmp_path, mutate)))


def _file_refuses(tmp_path, policy, mutate, where):
    path = tmp_path / "p.json"
    write_policy(path, policy, {"study": "t"})
    document = json.loads(path.read_text())
    mutate(document)
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=where):
        load_policy(path)


@pytest.mark.parametrize("edge", ["low", "high"])
def test_temperature_has_one_bound_everywhere(tmp_path, edge):
    outside = TEMPERATURE.low / 2 if edge == "low" else TEMPERATURE.high * 2
    inside = TEMPERATURE.low if edge == "low" else TEMPERATURE.high
    _space_refuses(tmp_path, lambda r: r["kd"].update(temperature=outside), r"kd\.temperature")
    assert load_space(str(smoke_variant(tmp_path, lambda r: r["kd"].update(temperature=inside))))
    policy = Policy((), (), KDSettings(inside, 0.5))  # inside: accepted by the dataclass
    _file_refuses(tmp_path, policy, lambda d: d["kd"].update(temperature=outside), r"kd\.temperature")
    with pytest.raises(ValueError, match="temperature"):
        KDSettings(outside, 0.5)


@pytest.mark.parametrize("edge", ["low", "high"])
def test_mixing_alpha_has_one_bound_everywhere(tmp_path, edge):
    outside = MIX_ALPHA.low / 2 if edge == "low" else MIX_ALPHA.high * 2
    inside = MIX_ALPHA.low if edge == "low" else MIX_ALPHA.high
    _space_refuses(tmp_path, lambda r: r.update(mixing=MIX | {"alpha": outside}), r"mixing\.alpha")
    assert load_space(str(smoke_variant(tmp_path, lambda r: r.update(mixing=MIX | {"alpha": inside}))))
    policy = Policy((), (), KDSettings(4.0, 0.5), MixSettings("mixup", 0.5, inside))
    _file_refuses(tmp_path, policy, lambda d: d["mixing"].update(alpha=outside), r"mixing\.alpha")
    with pytest.raises(ValueError, match="alpha"):
        MixSettings("mixup", 0.5, outside)
