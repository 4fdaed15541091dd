# syntax=docker/dockerfile:1.7
# Executor image of the OCR demo's `wget` step: Alpine with GNU wget and /bin/sh (the agent runs every
# command through sh). It does not contain pm-agent: the pod's init container copies it into the shared
# volume and the executor container runs /mnt/pipe/.pm/bin/pm-agent exec (charts/pipeline-app).
#   docker build -f docker/ocr-wget.Dockerfile -t pipeline-manager/ocr-wget:0.1.0 docker
ARG ALPINE_VERSION=3.22
FROM alpine:${ALPINE_VERSION}
RUN apk add --no-cache ca-certificates wget \
 && addgroup -S -g 65532 nonroot \
 && adduser -S -D -H -u 65532 -G nonroot -h /tmp -s /bin/sh nonroot \
 && wget --version | head -1
# In a pod the root filesystem is read-only; /tmp is a writable directory of the pod's emptyDir.
ENV HOME=/tmp
USER 65532:65532
WORKDIR /tmp
CMD ["/bin/sh"]
