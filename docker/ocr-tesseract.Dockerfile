# syntax=docker/dockerfile:1.7
# Executor image of the OCR application's `tesseract` step: Debian with tesseract-ocr (English data) and
# /bin/sh; GNU coreutils for the original command `for file in $(ls -v *.*) ; do tesseract ...; done`.
# It does not contain pm-agent: the pod's init container copies it into the shared volume and the executor
# container runs /mnt/pipe/.pm/bin/pm-agent exec (charts/pipeline-app).
#   docker build -f docker/ocr-tesseract.Dockerfile -t pipeline-manager/ocr-tesseract:0.1.0 docker
# BASE: Debian bookworm slim, or the stand-in docker/build.sh makes from Debian packages when no registry
# answers (pipeline-manager/base-debian).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      tesseract-ocr tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 nonroot \
 && useradd -u 65532 -g 65532 -d /tmp -M -s /bin/sh nonroot \
 && tesseract --version
# In a pod the root filesystem is read-only; /tmp is a writable directory of the pod's emptyDir.
# One thread per page: a pod runs `concurrency` tasks at once and the container has a CPU limit.
ENV HOME=/tmp OMP_THREAD_LIMIT=1
USER 65532:65532
WORKDIR /tmp
CMD ["/bin/sh"]
