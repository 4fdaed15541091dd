# syntax=docker/dockerfile:1.7
# Executor image of the OCR application's `wget` step: Debian with GNU wget, CA certificates and /bin/sh
# (the agent runs every command through sh). It does not contain pm-agent: the pod's init container copies
# it into the shared volume and the executor container runs /mnt/pipe/.pm/bin/pm-agent exec
# (charts/pipeline-app).
#   docker build -f docker/ocr-wget.Dockerfile -t pipeline-manager/ocr-wget:0.1.0 docker
# BASE: Debian bookworm slim, or the stand-in docker/build.sh makes from Debian packages when no registry
# answers (pipeline-manager/base-debian).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates wget \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 nonroot \
 && useradd -u 65532 -g 65532 -d /tmp -M -s /bin/sh nonroot \
 && wget --version | head -n 1
# In a pod the root filesystem is read-only; /tmp is a writable directory of the pod's emptyDir.
ENV HOME=/tmp
USER 65532:65532
WORKDIR /tmp
CMD ["/bin/sh"]
