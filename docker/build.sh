#!/usr/bin/env bash
# Builds every image of pipeline-manager with podman, tagged with the workspace version and `latest`:
#   pipeline-manager/pm-scheduler   pipeline-manager/pm-agent      (static musl binaries on distroless/static)
#   pipeline-manager/ocr-wget       pipeline-manager/ocr-tesseract pipeline-manager/ocr-mc   (Debian)
# and the three bases (docker/bases.sh): pipeline-manager/base-debian, base-busybox, base-static.
#
#   docker/build.sh [--refresh-bases] [IMAGE...]     (as root; IMAGE: names above without the prefix)
#
# - Bases: upstream (debian:bookworm-slim, busybox, distroless/static) when the registries answer, else
#   local stand-ins made from Debian packages (docker/bases.sh), reused from local storage while their
#   recipe is unchanged. PM_IMAGE_BASES=upstream|local|auto (default auto) overrides the probe;
#   --refresh-bases remakes (or pulls again) every base.
# - pm-agent and pm-scheduler are compiled on the host for the musl target of this machine (`cargo build
#   --locked --target <arch>-unknown-linux-musl`, the scheduler with --release, the agent with --profile small
#   at opt-level z; needs `rustup target add` of it and musl-tools for the C parts), checked to be static,
#   and copied into the images (the Dockerfiles' BINARY=prebuilt). CARGO_TARGET_DIR is honoured.
# - podman runs with CONTAINERS_CONF=docker/podman/containers.conf unless CONTAINERS_CONF is set.
# - Everything works from empty container storage; a rebuild reuses podman's layer cache.
# Environment: PM_IMAGE_TAG (default: the workspace version), PODMAN (default: podman).
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PODMAN=${PODMAN:-podman}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/podman/containers.conf}
REFRESH_BASES=false
ALL_IMAGES=(pm-scheduler pm-agent ocr-wget ocr-tesseract ocr-mc)

started=$SECONDS
log() { printf '%s\n' "$*" >&2; }
# A step that takes time: its name and the seconds since the start.
step() { printf '[%4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }

images=()
while [ $# -gt 0 ]; do
  case $1 in
    --refresh-bases) REFRESH_BASES=true ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    -*) log "unknown option $1 (see --help)"; exit 2 ;;
    *)
      case " ${ALL_IMAGES[*]} " in
        *" $1 "*) images+=("$1") ;;
        *) log "unknown image $1 (one of: ${ALL_IMAGES[*]})"; exit 2 ;;
      esac
      ;;
  esac
  shift
done
[ ${#images[@]} -gt 0 ] || images=("${ALL_IMAGES[@]}")

# shellcheck source=docker/bases.sh
. "$here/bases.sh"

# Build output that is not an image: the binaries' context, the build logs.
target_dir=${CARGO_TARGET_DIR:-$root/target}
work=$target_dir/images
mkdir -p "$work/logs"
BASES_LOG_DIR=$work/logs

version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml")
tag=${PM_IMAGE_TAG:-$version}
[ -n "$tag" ] || { log "no version in $root/Cargo.toml [workspace.package]"; exit 1; }

# A registry answers when an HTTP request to its API gets any HTTP status within 5 s.
registry_answers() {
  command -v curl >/dev/null && curl -sS -m 5 -o /dev/null "https://$1/v2/" 2>/dev/null
}
mode=${PM_IMAGE_BASES:-auto}
if [ "$mode" = auto ]; then
  if registry_answers registry-1.docker.io && registry_answers gcr.io; then mode=upstream; else mode=local; fi
fi
case $mode in
  upstream) pull=missing ;;
  local) pull=never ;;
  *) log "PM_IMAGE_BASES=$mode: expected upstream, local or auto"; exit 2 ;;
esac
step "bases: $mode; images: ${images[*]}; tag: $tag"
ensure_bases "$mode"

# The musl binaries, compiled once for both images.
needs_binaries=false
case " ${images[*]} " in *" pm-agent "* | *" pm-scheduler "*) needs_binaries=true ;; esac
context=$work/context
if $needs_binaries; then
  triple=$(uname -m)-unknown-linux-musl
  # The scheduler: the release profile (speed), without symbols or debug information.
  step "cargo build --release --locked --target $triple -p pm-scheduler"
  (cd "$root" && CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo build --release --locked --target "$triple" -p pm-scheduler)
  # The agent: size first, since every pipeline pod copies it into its volume (at most 5 MB): the `small`
  # profile (fat LTO, one codegen unit, stripped) at opt-level "z", with every default feature (the API and
  # probes, the original executors' gRPC service). Sizes of the other choices: docker/README.md.
  step "cargo build --profile small --locked --target $triple -p pm-agent (opt-level z)"
  (cd "$root" && CARGO_PROFILE_SMALL_OPT_LEVEL=z \
    cargo build --profile small --locked --target "$triple" -p pm-agent)
  rm -rf "$context"
  install -d -m 0750 "$context/out/var/lib/pipeline-manager"
  for bin in pm-agent:small pm-scheduler:release; do
    path=$target_dir/$triple/${bin#*:}/${bin%:*}
    bin=${bin%:*}
    if readelf -l "$path" | grep -q 'program interpreter'; then
      log "$path is not static (it names an ELF interpreter)"
      exit 1
    fi
    install -D -m 0755 "$path" "$context/out/usr/local/bin/$bin"
    log "$bin: $(stat -c %s "$path") bytes, static"
  done
fi

# build NAME CONTEXT BUILD_ARGS...: podman build of docker/NAME.Dockerfile; its output goes to a log,
# shown when it fails.
build() {
  local name=$1 dir=$2 log_file=$work/logs/$1.log
  shift 2
  step "podman build pipeline-manager/$name:$tag"
  if ! "$PODMAN" build --pull="$pull" -f "$here/$name.Dockerfile" \
    -t "localhost/pipeline-manager/$name:$tag" -t "localhost/pipeline-manager/$name:latest" "$@" "$dir" \
    >"$log_file" 2>&1; then
    tail -n 40 "$log_file" >&2
    log "podman build of $name failed; its whole output: $log_file"
    exit 1
  fi
}

for name in "${images[@]}"; do
  case $name in
    pm-agent | pm-scheduler) build "$name" "$context" --build-arg BINARY=prebuilt --build-arg BASE="$BASE_STATIC" ;;
    ocr-*) build "$name" "$here" --build-arg BASE="$BASE_DEBIAN" ;;
  esac
done

step "done"
"$PODMAN" images --filter reference='localhost/pipeline-manager/*' \
  --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -v ':[0-9a-f]\{12\} \|:bookworm-' | sort >&2
