"""What the local runtime takes from a Deployment's pod template, and what it refuses (no root)."""

import pytest

from flexsfc.local.podspec import DEFAULT_GRACE_SECONDS, PodSpecError, parse_pod_template


def _template(**container: object) -> dict:
    return {"spec": {"containers": [{"name": "nf", **container}]}}


def test_command_args_env_hooks_probe_and_grace() -> None:
    template = _template(
        command=["sh", "-c"],
        args=["exec sleep infinity"],
        env=[{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {}}}],
        lifecycle={"preStop": {"exec": {"command": ["sleep", "2"]}}},
        readinessProbe={"exec": {"command": ["nft", "list", "tables"]}, "periodSeconds": 1},
    )
    template["spec"]["terminationGracePeriodSeconds"] = 7
    spec = parse_pod_template(template, "Deployment default/fw")
    (container,) = spec.containers
    assert container.argv == ("sh", "-c", "exec sleep infinity")
    assert container.env == {"A": "1"}
    assert container.pre_stop == ("sleep", "2")
    assert container.readiness == ("nft", "list", "tables")
    assert spec.grace_seconds == 7


def test_defaults() -> None:
    spec = parse_pod_template(_template(command=["sleep", "infinity"]), "d")
    assert spec.grace_seconds == DEFAULT_GRACE_SECONDS
    assert spec.containers[0].pre_stop == ()


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"spec": {"containers": []}}, "containers is empty"),
        (_template(image="debian"), "containers[0].command is missing"),
        (_template(command=["x"], lifecycle={"preStop": {"httpGet": {"port": 80}}}), "only exec handlers"),
        (
            _template(command=["x"], readinessProbe={"exec": {"command": []}}),
            "readinessProbe.exec.command is empty",
        ),
    ],
)
def test_refused_with_field_and_fix(template: dict, message: str) -> None:
    with pytest.raises(PodSpecError, match="Deployment default/x") as info:
        parse_pod_template(template, "Deployment default/x")
    assert message in str(info.value)
