# syntax=docker/dockerfile:1.7
# The one-shot `garage-init` service of docker-compose.yml: the garage CLI (copied from the
# official image, a static binary in an image without a shell) plus a shell to script it.
# Build context: the repository root.
ARG GARAGE_IMAGE=dxflrs/garage:v2.5.0
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${GARAGE_IMAGE} AS garage

FROM ${RUNTIME_IMAGE}
COPY --from=garage /garage /usr/local/bin/garage
COPY --chmod=0755 infra/garage/compose-init.sh /usr/local/bin/garage-init
ENTRYPOINT ["/usr/local/bin/garage-init"]
