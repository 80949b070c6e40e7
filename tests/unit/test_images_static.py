"""Every image the compose stack uses is built on this host (infra/images/build.sh, `make images`): no
Dockerfile starts FROM a remote image and no compose service names one, so the stack needs no registry."""

from __future__ import annotations

import re

import yaml

from tests.helpers import ROOT

BUILD_SCRIPT = ROOT / "infra/images/build.sh"
DOCKERFILES = sorted({*ROOT.glob("infra/**/Dockerfile"), *ROOT.glob("infra/**/*.Dockerfile")})


def built_here() -> set[str]:
    """The tags build.sh gives: `-t NAME` of its `docker build`s and the imported debootstrap base."""
    text = BUILD_SCRIPT.read_text()
    tags = set(re.findall(r"-t (flowtune[\w.-]*:[\w.-]+)", text))
    [base] = re.findall(r"^BASE=(flowtune-base):\$SUITE$", text, re.MULTILINE)
    [suite] = re.findall(r"^SUITE=(\w+)$", text, re.MULTILINE)
    assert '- "$BASE"' in text, "the base is no longer `docker import`ed under $BASE"
    return tags | {f"{base}:{suite}"}


def from_images(dockerfile) -> list[str]:
    """The images a Dockerfile starts from, `${ARG}` resolved to the ARG's default."""
    text = dockerfile.read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    images = []
    for image in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE | re.IGNORECASE):
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), image))
    return images


def test_the_build_script_builds_every_dockerfile_and_the_base() -> None:
    assert len(DOCKERFILES) >= 3, DOCKERFILES
    script = BUILD_SCRIPT.read_text()
    for dockerfile in DOCKERFILES:
        assert dockerfile.relative_to(ROOT).as_posix() in script, f"build.sh does not build {dockerfile}"
    assert {"flowtune-base:bookworm", "flowtune-pyenv:local", "flowtune:local",
            "flowtune-postgres:local"} <= built_here()
    assert "debootstrap --variant=minbase" in script and "$DOCKER import" in script


def test_no_dockerfile_starts_from_a_remote_image() -> None:
    local = built_here()
    for dockerfile in DOCKERFILES:
        images = from_images(dockerfile)
        assert images, f"{dockerfile}: no FROM"
        for image in images:
            assert image in local, f"{dockerfile.relative_to(ROOT)}: FROM {image} is not built by infra/images/build.sh"


def test_every_compose_service_uses_a_local_image_and_never_pulls() -> None:
    local = built_here()
    services = yaml.safe_load((ROOT / "infra/compose/docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        assert service.get("image") in local, f"compose service {name}: image {service.get('image')} is not built here"
        assert service.get("pull_policy") == "never", f"compose service {name} may pull from a registry"
        if "build" in service:
            dockerfile = ROOT / "infra/compose" / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.resolve() in DOCKERFILES
