# syntax=docker/dockerfile:1.7
# Executor image of the OCR demo's upload step (executor `mc`): Alpine with two S3 clients and /bin/sh:
# the MinIO client as `mc` (Alpine ships it as `mcli`; credentials from the environment, e.g.
# MC_HOST_s3=https://ACCESS_KEY:SECRET_KEY@s3.example.com from a Secret, never inside task commands) and
# rclone (what examples/ocr/run.sh uses; RCLONE_CONFIG_* variables). It does not contain pm-agent: the pod's
# init container copies it into the shared volume and the executor container runs
# /mnt/pipe/.pm/bin/pm-agent exec (charts/pipeline-app).
#   docker build -f docker/ocr-mc.Dockerfile -t pipeline-manager/ocr-mc:0.1.0 docker
ARG ALPINE_VERSION=3.22
FROM alpine:${ALPINE_VERSION}
RUN apk add --no-cache ca-certificates minio-client rclone \
 && if ! command -v mc >/dev/null 2>&1; then ln -s "$(command -v mcli)" /usr/local/bin/mc; fi \
 && addgroup -S -g 65532 nonroot \
 && adduser -S -D -H -u 65532 -G nonroot -h /tmp -s /bin/sh nonroot \
 && mc --version \
 && rclone version
# In a pod the root filesystem is read-only; /tmp is a writable directory of the pod's emptyDir, where mc
# keeps its configuration ($HOME/.mc) and rclone its cache.
ENV HOME=/tmp
USER 65532:65532
WORKDIR /tmp
CMD ["/bin/sh"]
