"""deploy/Dockerfile, checked statically (no Docker engine here, no hadolint): a digest-pinnable base
image, no PyInstaller, the wheel with the kube extra, the shim and the IPAM path where the manifests
expect them, and a .dockerignore that keeps local build outputs and the virtualenv out."""

import re
from pathlib import Path

from flexsfc.operator import deployset

REPO = Path(__file__).parents[3]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_base_image_is_a_build_arg_used_by_every_stage() -> None:
    steps = instructions()
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=")
    default = steps[0][1].split("=", 1)[1]
    # A tag that a digest can be appended to (python:3.11-slim-bookworm@sha256:...).
    assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", default)
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) == 2 and all(args.split()[0] == "${BASE_IMAGE}" for args in froms)
    assert "@sha256:" in DOCKERFILE.read_text()  # the pinning is documented in the file


def test_no_pyinstaller_and_the_wheel_carries_the_compiled_parts() -> None:
    text = DOCKERFILE.read_text().lower()
    assert "pyinstaller" not in text
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "pip wheel" in runs and "[kube]" in runs
    copies = [args.split() for keyword, args in instructions() if keyword == "COPY" and "--from" not in args]
    for sources in (c[:-1] for c in copies):
        for source in sources:
            assert (REPO / source).exists(), source
    assert any("setup.py" in c for c in copies)  # the build hook that compiles eBPF object and shim


def test_image_paths_match_the_manifests() -> None:
    text = DOCKERFILE.read_text()
    assert deployset.IMAGE_SHIM in text  # where install-cni copies the shim from
    assert f"FLEXSFC_IPAM_PATH={deployset.IMAGE_IPAM_PATH}" in text
    runtime = text[text.rindex("FROM ${BASE_IMAGE}") :]
    assert "containernetworking-plugins" in runtime and "libbpf1" in runtime
    assert "clang" not in runtime  # the runtime image compiles nothing


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {
        ".git",
        ".venv",
        "build",
        "**/*.bpf.o",
        "**/*.so",
        "**/*.stamp",
        "flexsfc/cni/shim/flexsfc-cni",
    } <= patterns
    # Nothing the build copies is ignored.
    assert not patterns & {"flexsfc", "pyproject.toml", "setup.py", "README.md"}
