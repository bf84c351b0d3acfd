#!/usr/bin/env bash
# Build the genbench image (infra/genbench.Dockerfile) for each variant and tag it twice, with the version and with
# the git commit:
#   IMAGE:VERSION-cuda  IMAGE:sha-COMMIT-cuda  IMAGE:VERSION-cpu  IMAGE:sha-COMMIT-cpu
# IMAGE and VERSION are params' `kubeflow.image` and `kubeflow.tag` (else the genbench version), read through
# `genbench image ref`, so the registry is named in that one setting and nowhere here.
#
# Usage: infra/build-image.sh [--variant cuda|cpu]... [--push] [--params FILE]
#   --variant  build only this variant (repeatable; default: both)
#   --push     push both tags of each variant after building (log in first: docker login REGISTRY); refused with
#              uncommitted changes, which the commit tag would not name
#   --params   the parameter file the image setting is read from (default: params.yaml)
# Extra `docker build` arguments (a cache, --platform) go in DOCKER_BUILD_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '/^# Usage:/,/^# Extra/s/^# \{0,1\}//p' "$0"; }
fail() { echo "error: $*" >&2; exit 2; }

variants=()
push=false
params=params.yaml
while (($#)); do
  case "$1" in
    --variant)
      [[ "${2:-}" =~ ^(cuda|cpu)$ ]] || fail "--variant takes cuda or cpu, not '${2:-}'"
      variants+=("$2")
      shift
      ;;
    --push) push=true ;;
    --params)
      [[ -f "${2:-}" ]] || fail "--params: '${2:-}' is not a file; give the parameter file the image setting is in"
      params=$2
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) fail "unknown argument '$1'; $(usage | head -1)" ;;
  esac
  shift
done
((${#variants[@]})) || variants=(cuda cpu)

command -v docker >/dev/null || fail "docker not found; install Docker (with buildx) or build in CI (.github/workflows/image.yml)"
if $push && [[ -n "$(git status --porcelain)" ]]; then
  fail "--push with uncommitted changes: the sha-COMMIT tag would name code the image does not hold; commit first"
fi

read -ra extra <<<"${DOCKER_BUILD_ARGS:-}"
revision=$(git rev-parse HEAD)
for variant in "${variants[@]}"; do
  version_ref=$(uv run genbench image ref --params "$params" --variant "$variant")
  commit_ref=$(uv run genbench image ref --params "$params" --variant "$variant" --commit)
  docker build --file infra/genbench.Dockerfile --build-arg "VARIANT=$variant" \
    --label "org.opencontainers.image.revision=$revision" \
    --tag "$version_ref" --tag "$commit_ref" "${extra[@]}" .
  if $push; then
    docker push "$version_ref"
    docker push "$commit_ref"
  fi
  echo "built $version_ref $commit_ref$($push && echo ' (pushed)')"
done
