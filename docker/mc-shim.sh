#!/bin/sh
# mc: a small stand-in for the MinIO client's `mb` and `cp` (and `alias set`), over rclone. It is NOT the
# MinIO client: Debian has no package of it, and where it can be installed it should be used instead. It
# exists so that tasks written for `mc` (the OCR application's upload step) run unchanged in the
# pipeline-manager/ocr-mc image.
#
# What it understands (anything else fails with exit status 2):
#   mc mb [-p|--ignore-existing] ALIAS/BUCKET...     -> rclone mkdir ALIAS:BUCKET (creating an existing
#                                                      bucket succeeds, as with --ignore-existing)
#   mc cp [-r|--recursive] SRC... TARGET              -> rclone copy SRC ALIAS:BUCKET/PREFIX (rclone copyto
#                                                      when a single file is copied to an object name)
#     - SRC/ (trailing slash) copies the directory's contents; SRC without it copies the directory itself
#       (TARGET/SRC-name/...), as mc does.
#     - a path is remote when its first component is a known alias, otherwise local.
#   mc alias set ALIAS URL [ACCESS_KEY SECRET_KEY]    -> an s3 remote in rclone's config file
#                                                      ($HOME/.config/rclone/rclone.conf)
#   mc --version
# Aliases, as with mc, come from the environment or from `mc alias set`:
#   MC_HOST_<alias>=https://ACCESS_KEY:SECRET_KEY[:SESSION_TOKEN]@host[:port]  (an S3 endpoint; keys are
#     taken literally, not URL-decoded)
#   or any rclone remote given as RCLONE_CONFIG_<ALIAS>_TYPE=... (e.g. webdav for a local test bucket).
# Flags taken and ignored: -q/--quiet. --insecure becomes rclone's --no-check-certificate.
set -eu

usage() {
    echo "mc (a stand-in over rclone): only 'mb', 'cp' and 'alias set' are supported; use rclone for the rest" >&2
    exit 2
}

die() {
    echo "mc: $*" >&2
    exit 1
}

# The environment-variable form of an rclone remote name: upper case, '-' as '_'.
env_name() {
    printf '%s' "$1" | tr 'abcdefghijklmnopqrstuvwxyz-' 'ABCDEFGHIJKLMNOPQRSTUVWXYZ_'
}

# MC_HOST_<alias>=scheme://AK:SK[:TOKEN]@host[:port] -> RCLONE_CONFIG_<ALIAS>_* (an s3 remote).
import_mc_hosts() {
    for alias in $(env | sed -n 's/^MC_HOST_\([A-Za-z0-9_]*\)=.*/\1/p'); do
        url=$(printenv "MC_HOST_$alias")
        case $url in
            *://*@*) ;;
            *) die "MC_HOST_$alias is not scheme://ACCESS_KEY:SECRET_KEY@host" ;;
        esac
        scheme=${url%%://*}
        rest=${url#*://}
        creds=${rest%@*}
        host=${rest##*@}
        ak=${creds%%:*}
        sk_token=${creds#*:}
        sk=${sk_token%%:*}
        n=RCLONE_CONFIG_$(env_name "$alias")
        export "${n}_TYPE=s3" "${n}_PROVIDER=Minio" "${n}_ENV_AUTH=false" \
            "${n}_ENDPOINT=$scheme://${host%%/*}" "${n}_ACCESS_KEY_ID=$ak" "${n}_SECRET_ACCESS_KEY=$sk"
        if [ "$sk_token" != "$sk" ]; then
            export "${n}_SESSION_TOKEN=${sk_token#*:}"
        fi
    done
}

# rclone's config file (where `mc alias set` writes). Without one, rclone is pointed at /dev/null: the
# remotes then come from the environment only, and rclone does not log "Config file not found" each time.
config_file=${RCLONE_CONFIG:-$(rclone config file | tail -n 1)}
if [ ! -f "$config_file" ] && [ "${1:-}" != alias ]; then
    export RCLONE_CONFIG=/dev/null
fi

# True when ALIAS is an rclone remote: from the environment or a section of rclone's config file.
is_alias() {
    case $1 in '' | . | .. | *[!A-Za-z0-9_.-]*) return 1 ;; esac
    if [ -n "$(printenv "RCLONE_CONFIG_$(env_name "$1")_TYPE" || true)" ]; then
        return 0
    fi
    [ -f "$config_file" ] && grep -qxF "[$1]" "$config_file"
}

# An mc path as rclone's: ALIAS/BUCKET/KEY -> ALIAS:BUCKET/KEY; a local path unchanged.
to_rclone() {
    case $1 in
        /* | ./* | ../*) printf '%s' "$1"; return ;;
    esac
    alias=${1%%/*}
    if is_alias "$alias"; then
        rest=${1#"$alias"}
        printf '%s:%s' "$alias" "${rest#/}"
    else
        printf '%s' "$1"
    fi
}

# True when TARGET (an mc path) names an object rather than a bucket or a prefix ending in '/'.
names_object() {
    case $1 in */) return 1 ;; esac
    rest=${1#*/}
    [ "$rest" != "$1" ] && case $rest in */*) true ;; *) false ;; esac
}

# rclone, without TLS certificate checks after --insecure.
run_rclone() {
    if $insecure; then
        rclone --no-check-certificate "$@"
    else
        rclone "$@"
    fi
}

cmd_mb() {
    [ $# -gt 0 ] || usage
    for t in "$@"; do
        case $t in
            -p | --ignore-existing | -q | --quiet) continue ;;
            --insecure) insecure=true; continue ;;
            -*) usage ;;
        esac
        r=$(to_rclone "$t")
        case $r in *:*) ;; *) die "$t: not ALIAS/BUCKET (no alias ${t%%/*})" ;; esac
        run_rclone mkdir "$r"
    done
}

cmd_cp() {
    recursive=false
    # The remaining arguments after the flags, newline-separated (paths with newlines are not supported).
    args=
    for a in "$@"; do
        case $a in
            -r | --recursive) recursive=true ;;
            -q | --quiet) ;;
            --insecure) insecure=true ;;
            -*) usage ;;
            *) args="$args$a
" ;;
        esac
    done
    n=$(printf '%s' "$args" | grep -c '' || true)
    [ "$n" -ge 2 ] || usage
    target=$(printf '%s' "$args" | tail -n 1)
    rtarget=$(to_rclone "$target")
    printf '%s' "$args" | head -n $((n - 1)) | while IFS= read -r src; do
        rsrc=$(to_rclone "$src")
        if [ -d "$src" ]; then
            $recursive || die "$src is a directory (use --recursive)"
            case $src in
                */) dest=$rtarget ;;
                *) dest=${rtarget%/}/$(basename "$src") ;;
            esac
            run_rclone copy "$rsrc" "$dest"
        elif [ "$rsrc" != "$src" ] && $recursive; then
            # A remote prefix, copied recursively.
            run_rclone copy "$rsrc" "$rtarget"
        elif names_object "$target" && [ "$n" -eq 2 ]; then
            run_rclone copyto "$rsrc" "$rtarget"
        else
            run_rclone copy "$rsrc" "$rtarget"
        fi
    done
}

cmd_alias() {
    [ "${1:-}" = set ] || usage
    shift
    [ $# -eq 2 ] || [ $# -eq 4 ] || usage
    case $1 in *[!A-Za-z0-9_-]*) die "$1: an alias is letters, digits, '-' and '_'" ;; esac
    mkdir -p "$(dirname "$config_file")"
    touch "$config_file"
    if [ $# -eq 4 ]; then
        rclone config create "$1" s3 provider=Minio env_auth=false endpoint="$2" \
            access_key_id="$3" secret_access_key="$4" --non-interactive >/dev/null
    else
        rclone config create "$1" s3 provider=Minio env_auth=true endpoint="$2" --non-interactive >/dev/null
    fi
    echo "Added \`$1\` successfully."
}

insecure=false
import_mc_hosts
case ${1:-} in
    mb) shift; cmd_mb "$@" ;;
    cp) shift; cmd_cp "$@" ;;
    alias) shift; cmd_alias "$@" ;;
    --version | -v) echo "mc (a stand-in over $(rclone version | head -n 1))" ;;
    *) usage ;;
esac
