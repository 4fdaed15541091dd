# shellcheck shell=bash
# Base images for docker/build.sh, sourced by it. Each base has a stable local name that the Dockerfiles'
# BASE arguments and tests/images.rs use:
#   pipeline-manager/base-debian   Debian bookworm, minimal, with apt and sh  (upstream: debian:bookworm-slim)
#   pipeline-manager/base-busybox  FROM scratch + busybox, no libc            (upstream: busybox:1.37-musl)
#   pipeline-manager/base-static   FROM scratch + /etc/passwd, /etc/group (nonroot 65532), CA certificates,
#                                  /tmp; no shell, no libc                    (upstream: distroless/static)
# With a registry (`upstream`), each is the upstream image, pulled and tagged with the local name. Without
# one (`local`), each is made here from Debian packages: base-debian with mmdebstrap, the others from files
# of the host (busybox-static, ca-certificates), then `podman import`.
#
# Cache: a local base is tagged with a hash of its recipe (suite, variant, mirrors, options, the input
# files); when that tag is already in local storage it is reused (`podman image exists`), else made anew.
# The Debian base is therefore not refreshed by itself: `docker/build.sh --refresh-bases` remakes it (its
# recipe names no package versions, so a remake picks up the suite's current packages).
#
# Expects from the caller: PODMAN (the podman command), REFRESH_BASES (true/false), BASES_LOG_DIR (where
# mmdebstrap's output goes), and the helpers `step` and `log`.

# Upstream images, used when a registry answers.
UPSTREAM_DEBIAN=docker.io/library/debian:bookworm-slim
UPSTREAM_BUSYBOX=docker.io/library/busybox:1.37-musl
UPSTREAM_STATIC=gcr.io/distroless/static-debian12:nonroot

# Changing how a base is made: bump this, so every cached local base is remade.
BASES_RECIPE_VERSION=1

# The Debian base: what `debian:bookworm-slim` is (minbase: apt, dpkg, bash, coreutils), from
# deb.debian.org. As in that image: merged /usr set up directly (the merged-usr hook installs
# usr-is-merged, not usrmerge, which would pull in perl: +46 MB); no documentation, manual pages or
# translations, also for packages installed later; apt keeps no downloaded packages or caches (the
# docker-clean settings of the official images).
DEBIAN_SUITE=bookworm
APT_CLEAN='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
DEBIAN_MMDEBSTRAP_ARGS=(
  --variant=minbase
  --format=tar
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --aptopt='APT::Install-Recommends "false"'
  --aptopt='Acquire::Languages "none"'
  --aptopt="DPkg::Post-Invoke { $APT_CLEAN };"
  --aptopt="APT::Update::Post-Invoke { $APT_CLEAN };"
  --aptopt='Dir::Cache::pkgcache ""'
  --aptopt='Dir::Cache::srcpkgcache ""'
)
DEBIAN_MIRRORS=(
  "deb http://deb.debian.org/debian $DEBIAN_SUITE main"
  "deb http://deb.debian.org/debian $DEBIAN_SUITE-updates main"
  "deb http://deb.debian.org/debian-security $DEBIAN_SUITE-security main"
)

# The users of the small bases: root, nonroot (65532, as in distroless) and nobody.
BASE_PASSWD='root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
'
BASE_GROUP='root:x:0:
nobody:x:65534:
nonroot:x:65532:
'
HOST_BUSYBOX=/bin/busybox
HOST_CA_CERTS=/etc/ssl/certs/ca-certificates.crt

# The first 12 hex digits of the SHA-256 of stdin.
short_hash() {
  sha256sum | cut -c1-12
}

# Tags IMAGE as pipeline-manager/NAME:latest.
tag_base() {
  "$PODMAN" tag "$1" "localhost/pipeline-manager/$2:latest"
}

# ensure_base NAME TAG_PREFIX RECIPE_TEXT MAKE_FUNCTION: the local base NAME tagged TAG_PREFIX + the hash
# of RECIPE_TEXT, made by MAKE_FUNCTION IMAGE_REF unless it exists. Prints the image reference (stdout).
ensure_base() {
  local name=$1 prefix=$2 recipe=$3 make=$4 ref
  ref="localhost/pipeline-manager/$name:$prefix$(printf '%s\n%s\n' "$BASES_RECIPE_VERSION" "$recipe" | short_hash)"
  if ! $REFRESH_BASES && "$PODMAN" image exists "$ref"; then
    log "base $name: $ref (cached)"
  else
    step "base $name: making $ref"
    "$make" "$ref"
    # Other recipes' bases of this name lose their tag (`podman image prune` then frees them).
    local old
    for old in $("$PODMAN" images --format '{{.Repository}}:{{.Tag}}' "localhost/pipeline-manager/$name"); do
      case $old in "$ref" | *:latest) ;; *) "$PODMAN" untag "$old" "$old" 2>/dev/null || true ;; esac
    done
  fi
  tag_base "$ref" "$name"
  printf '%s\n' "$ref"
}

make_debian() {
  local ref=$1
  command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; return 1; }
  local log_file=$BASES_LOG_DIR/base-debian.log
  if ! mmdebstrap --quiet "${DEBIAN_MMDEBSTRAP_ARGS[@]}" "$DEBIAN_SUITE" - "${DEBIAN_MIRRORS[@]}" 2>"$log_file" \
    | "$PODMAN" import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$ref" >/dev/null; then
    tail -n 40 "$log_file" >&2
    log "mmdebstrap or podman import failed; mmdebstrap's whole output: $log_file"
    return 1
  fi
}

# Writes the files shared by the small bases into DIR: users, groups, /tmp, the home of nonroot.
small_base_files() {
  local dir=$1
  chmod 0755 "$dir"
  install -d -m 0755 "$dir/etc" "$dir/home"
  install -d -m 1777 "$dir/tmp"
  install -d -m 0700 "$dir/root"
  install -d -m 0700 -o 65532 -g 65532 "$dir/home/nonroot"
  printf '%s' "$BASE_PASSWD" >"$dir/etc/passwd"
  printf '%s' "$BASE_GROUP" >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
}

# A rootfs directory as a tar stream on stdout, every file owned as on disk (numeric), no host names.
tar_rootfs() {
  tar --numeric-owner -C "$1" -c .
}

make_busybox() {
  local ref=$1 dir
  [ -x "$HOST_BUSYBOX" ] || { log "$HOST_BUSYBOX is missing (apt-get install busybox-static)"; return 1; }
  if readelf -l "$HOST_BUSYBOX" | grep -q 'program interpreter'; then
    log "$HOST_BUSYBOX is not static (apt-get install busybox-static, which replaces busybox)"
    return 1
  fi
  dir=$(mktemp -d)
  small_base_files "$dir"
  install -D -m 0755 "$HOST_BUSYBOX" "$dir/bin/busybox"
  local applet
  for applet in $("$HOST_BUSYBOX" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$dir/$(dirname "$applet")"
    ln -sf /bin/busybox "$dir/$applet"
  done
  tar_rootfs "$dir" | "$PODMAN" import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["sh"]' - "$ref" >/dev/null
  rm -rf "$dir"
}

make_static() {
  local ref=$1 dir
  [ -f "$HOST_CA_CERTS" ] || { log "$HOST_CA_CERTS is missing (apt-get install ca-certificates)"; return 1; }
  dir=$(mktemp -d)
  small_base_files "$dir"
  install -D -m 0644 "$HOST_CA_CERTS" "$dir/etc/ssl/certs/ca-certificates.crt"
  tar_rootfs "$dir" | "$PODMAN" import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /home/nonroot' - "$ref" >/dev/null
  rm -rf "$dir"
}

# pull_base NAME UPSTREAM: the upstream image, tagged with the local name. Prints its reference.
pull_base() {
  local name=$1 upstream=$2
  if $REFRESH_BASES || ! "$PODMAN" image exists "$upstream"; then
    step "base $name: pulling $upstream"
    "$PODMAN" pull --quiet "$upstream" >/dev/null
  else
    log "base $name: $upstream (in local storage)"
  fi
  tag_base "$upstream" "$name"
  printf '%s\n' "$upstream"
}

# ensure_bases MODE: sets BASE_DEBIAN, BASE_BUSYBOX and BASE_STATIC to image references (MODE upstream
# or local).
# shellcheck disable=SC2034 # the BASE_* variables are read by docker/build.sh
ensure_bases() {
  if [ "$1" = upstream ]; then
    BASE_DEBIAN=$(pull_base base-debian "$UPSTREAM_DEBIAN")
    BASE_BUSYBOX=$(pull_base base-busybox "$UPSTREAM_BUSYBOX")
    BASE_STATIC=$(pull_base base-static "$UPSTREAM_STATIC")
    return
  fi
  local recipe
  recipe=$(printf 'mmdebstrap %s\n' "$DEBIAN_SUITE" "${DEBIAN_MMDEBSTRAP_ARGS[@]}" "${DEBIAN_MIRRORS[@]}")
  BASE_DEBIAN=$(ensure_base base-debian "$DEBIAN_SUITE-" "$recipe" make_debian)
  recipe=$(printf '%s%s%s' "$BASE_PASSWD" "$BASE_GROUP" "$(sha256sum <"$HOST_BUSYBOX" 2>/dev/null)")
  BASE_BUSYBOX=$(ensure_base base-busybox "" "$recipe" make_busybox)
  recipe=$(printf '%s%s%s' "$BASE_PASSWD" "$BASE_GROUP" "$(sha256sum <"$HOST_CA_CERTS" 2>/dev/null)")
  BASE_STATIC=$(ensure_base base-static "" "$recipe" make_static)
}
