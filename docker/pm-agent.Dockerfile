# syntax=docker/dockerfile:1.7
# pm-agent: one static (musl) binary on distroless/static, user 65532. Static on purpose: the init container
# of every pipeline pod copies it into the shared volume (`pm-agent install /mnt/pipe/.pm/bin`), and each
# executor container runs that copy as `pm-agent exec`, whatever libc (glibc, musl or none) its image has.
#
# Two ways to get the binary (build argument BINARY):
# - `build` (the default): compiled here in rust:alpine. Build from the repository root; the context is the
#   whole workspace (cargo --locked needs every member):
#     docker build -f docker/pm-agent.Dockerfile -t pipeline-manager/pm-agent:0.1.0 .
# - `prebuilt`: the context is a directory holding out/usr/local/bin/pm-agent, compiled before (docker/build.sh
#   compiles pm-agent and pm-scheduler once on the host and lays that directory out). Unused stages are not
#   built (BuildKit; podman/buildah >= 1.27), so this needs no Rust image.
# BASE: distroless/static, or the stand-in docker/build.sh makes when no registry answers
# (pipeline-manager/base-static). Multi-arch (amd64 + arm64, e.g. for a Raspberry Pi): see docker/README.md.
ARG RUST_VERSION=1.95
ARG BASE=gcr.io/distroless/static-debian12:nonroot
ARG BINARY=build

FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
# Set by buildx for each --platform (amd64, arm64); plain `docker build` leaves it empty (= amd64).
ARG TARGETARCH
# gcc and musl-dev for the C parts (ring, through the cc crate); binutils for the static check below.
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
# Size first (at most 5 MB), since every pipeline pod copies this binary: the `small` profile (fat LTO, one
# codegen unit, stripped) at opt-level "z", with the default features (the direct-run API and --http-listen,
# which the pods' probes and /metrics use; the original executors' gRPC service). It is checked to be
# static: no ELF interpreter.
RUN --mount=type=cache,id=pm-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=pm-target-agent-${TARGETARCH},target=/src/target,sharing=locked \
    set -eux; \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-musl ;; \
      arm64) triple=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    rustup target add "$triple"; \
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_SMALL_OPT_LEVEL=z \
      cargo build --profile small --locked -p pm-agent --target "$triple"; \
    bin="target/$triple/small/pm-agent"; \
    if readelf -l "$bin" | grep -q 'program interpreter'; then echo "$bin is not static" >&2; exit 1; fi; \
    install -D -m 0755 "$bin" /out/usr/local/bin/pm-agent

FROM scratch AS prebuilt
COPY out /out

FROM ${BINARY} AS binary

FROM ${BASE}
COPY --from=binary /out/usr/local/bin/pm-agent /usr/local/bin/pm-agent
USER 65532:65532
# 7071: the direct-run API (loopback unless a token is set); 7072: --http-listen (/healthz, /readyz, /metrics).
EXPOSE 7071 7072
ENTRYPOINT ["/usr/local/bin/pm-agent"]
CMD ["run"]
