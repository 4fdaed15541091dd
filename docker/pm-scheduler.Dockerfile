# syntax=docker/dockerfile:1.7
# pm-scheduler: one static (musl) binary on distroless/static, user 65532 (no shell, no package manager).
#
# Two ways to get the binary (build argument BINARY):
# - `build` (the default): compiled here in rust:alpine. Build from the repository root; the context is the
#   whole workspace (cargo --locked needs every member):
#     docker build -f docker/pm-scheduler.Dockerfile -t pipeline-manager/pm-scheduler:0.1.0 .
# - `prebuilt`: the context is a directory holding out/usr/local/bin/pm-scheduler and the empty data
#   directory out/var/lib/pipeline-manager, compiled before (docker/build.sh compiles pm-agent and
#   pm-scheduler once on the host and lays that directory out). Unused stages are not built (BuildKit;
#   podman/buildah >= 1.27), so this needs no Rust image.
# BASE: distroless/static, or the stand-in docker/build.sh makes when no registry answers
# (pipeline-manager/base-static). Multi-arch (amd64 + arm64, e.g. for a Raspberry Pi): see docker/README.md.
ARG RUST_VERSION=1.95
ARG BASE=gcr.io/distroless/static-debian12:nonroot
ARG BINARY=build

FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
# Set by buildx for each --platform (amd64, arm64); plain `docker build` leaves it empty (= amd64).
ARG TARGETARCH
# gcc and musl-dev for the C parts (mimalloc, ring, through the cc crate); binutils for the static check.
RUN apk add --no-cache gcc musl-dev binutils
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY protocol protocol
COPY task task
COPY http http
COPY scheduler scheduler
COPY client client
COPY cli cli
COPY agent agent
COPY pm pm
COPY testkit testkit
COPY bench bench
COPY loadtest loadtest
COPY tests tests
# Symbols are stripped (the release profile keeps line tables for profiling; an image does not need them).
# The binary is checked to be static: no ELF interpreter.
RUN --mount=type=cache,id=pm-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=pm-target-scheduler-${TARGETARCH},target=/src/target,sharing=locked \
    set -eux; \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    rustup target add "$triple"; \
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=0 \
      cargo build --release --locked -p pm-scheduler --target "$triple"; \
    bin="target/$triple/release/pm-scheduler"; \
    if readelf -l "$bin" | grep -q 'program interpreter'; then echo "$bin is not static" >&2; exit 1; fi; \
    install -D -m 0755 "$bin" /out/usr/local/bin/pm-scheduler; \
    install -d -m 0750 /out/var/lib/pipeline-manager

FROM scratch AS prebuilt
COPY out /out

FROM ${BINARY} AS binary

FROM ${BASE}
COPY --from=binary /out/usr/local/bin/pm-scheduler /usr/local/bin/pm-scheduler
# The default data directory (on Kubernetes a PersistentVolume is mounted here; charts/pipeline-manager).
COPY --from=binary --chown=65532:65532 /out/var/lib/pipeline-manager /var/lib/pipeline-manager
ENV PM_DATA=/var/lib/pipeline-manager
USER 65532:65532
# 7070: the protocol; 7072: /metrics, /healthz, /readyz. The defaults listen on loopback only: pass
# --listen 0.0.0.0:7070 --http-listen 0.0.0.0:7072 with token files (or --insecure), as the chart does.
EXPOSE 7070 7072
ENTRYPOINT ["/usr/local/bin/pm-scheduler"]
