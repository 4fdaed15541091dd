# syntax=docker/dockerfile:1.7
# Executor image of the OCR application's upload step (executor `mc`): Debian with rclone, CA certificates,
# /bin/sh, and `mc`: docker/mc-shim.sh, a small stand-in for the MinIO client's `mb`, `cp` and `alias set`
# over rclone (Debian has no package of the MinIO client). Credentials come from the environment, e.g.
# MC_HOST_s3=https://ACCESS_KEY:SECRET_KEY@s3.example.com or RCLONE_CONFIG_<REMOTE>_* from a Secret, never
# inside task commands. It does not contain pm-agent: the pod's init container copies it into the shared
# volume and the executor container runs /mnt/pipe/.pm/bin/pm-agent exec (charts/pipeline-app).
#   docker build -f docker/ocr-mc.Dockerfile -t pipeline-manager/ocr-mc:0.1.0 docker
# BASE: Debian bookworm slim, or the stand-in docker/build.sh makes from Debian packages when no registry
# answers (pipeline-manager/base-debian).
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates rclone \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 nonroot \
 && useradd -u 65532 -g 65532 -d /tmp -M -s /bin/sh nonroot \
 && rclone version
# The shim's mode (0755) comes from the repository.
COPY mc-shim.sh /usr/local/bin/mc
# In a pod the root filesystem is read-only; /tmp is a writable directory of the pod's emptyDir, where
# rclone keeps its configuration ($HOME/.config/rclone, written by `mc alias set`) and its cache.
ENV HOME=/tmp
USER 65532:65532
WORKDIR /tmp
RUN mc --version
CMD ["/bin/sh"]
