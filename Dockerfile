# syntax=docker/dockerfile:1
# Container images of kubelet-rubber-stamp, one target per binary:
#
#   docker build --target approver -t REGISTRY/rubber-stamp-approver:0.1.0 .
#   docker build --target agent    -t REGISTRY/rubber-stamp-agent:0.1.0 .
#
# and the kubectl plugin (`kubectl rubber-stamp`), written to ./bin for your PATH:
#
#   docker build --target kubectl-plugin --output type=local,dest=bin .
#
# The builder runs build/release.sh, the script CI runs, so the image ships what CI built
# and tested. The runtime is distroless "cc" (glibc, libgcc, CA certificates, nothing else:
# no shell, no package manager), on the same Debian release as the builder.
# Pin the two base images by digest in your own build for reproducibility.

ARG RUST_IMAGE=docker.io/library/rust:1.95.0-slim-trixie
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian13

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    build/release.sh /out

# The approver needs no privilege at all: the distroless "nonroot" user (65532), which the
# Deployment's securityContext also sets.
FROM ${RUNTIME_IMAGE}:nonroot AS approver
COPY --from=build /out/rubber-stamp-approver /usr/local/bin/rubber-stamp-approver
# The kubectl plugin ships beside it (`docker cp` it out, or build the kubectl-plugin target).
COPY --from=build /out/kubectl-rubber_stamp /usr/local/bin/kubectl-rubber_stamp
USER 65532:65532
EXPOSE 8443 8081 9090
ENTRYPOINT ["/usr/local/bin/rubber-stamp-approver"]
CMD ["run"]

# The agent runs as uid 0 for one reason: it reads the kubelet's client key
# (/var/lib/kubelet/pki/kubelet-client-current.pem, root-owned, mode 0600) as its owner.
# The DaemonSet drops every capability (so no CAP_DAC_OVERRIDE: root reads only what root
# owns), forbids privilege escalation and mounts the root filesystem read-only.
FROM ${RUNTIME_IMAGE} AS agent
COPY --from=build /out/rubber-stamp-agent /usr/local/bin/rubber-stamp-agent
USER 0:0
EXPOSE 10271
ENTRYPOINT ["/usr/local/bin/rubber-stamp-agent"]

# The kubectl plugin alone (glibc, like the images' runtime): `--output` writes it out.
FROM scratch AS kubectl-plugin
COPY --from=build /out/kubectl-rubber_stamp /kubectl-rubber_stamp
