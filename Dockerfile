# roster's container image: the `roster` binary on distroless (glibc, libgcc, CA certificates; no shell, no
# package manager), running as uid/gid 65532 ("nonroot"). Build from the repository root:
#   docker build -t ghcr.io/roster-dev/roster:0.1.0 .
#   buildah bud --layers -t ghcr.io/roster-dev/roster:0.1.0 .      # daemonless (Debian: apt-get install buildah)
# The chart runs it with `args: [run, ...]` and a read-only root filesystem; roster writes no files.
# Pin the base images by digest (NAME@sha256:...) in a release pipeline.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Without the `dev` feature: the image carries no in-memory API server. No debug info beyond symbol names: backtraces keep function names, the image stays small. jemalloc (roster's
# allocator) fixes the page size at build time: on arm64 build it for pages up to 64 KiB, which also runs on
# 4 KiB and 16 KiB kernels (the variable applies to aarch64 builds only).
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    AARCH64_UNKNOWN_LINUX_GNU_JEMALLOC_SYS_WITH_LG_PAGE=16
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features --bin roster \
 && install -D -m 0755 target/release/roster /out/roster \
 && /out/roster --version

# Same Debian release (12, glibc 2.36) as the builder, so the binary's glibc and libgcc match. roster needs the
# CA bundle (/etc/ssl/certs) even with an insecure kubeconfig: its TLS client loads the system roots at start.
# distroless/cc has it; on debian:bookworm-slim instead, install ca-certificates and add a uid-65532 user.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="roster" \
      org.opencontainers.image.description="Keeps every Kubernetes Service's Endpoints and EndpointSlices right" \
      org.opencontainers.image.source="https://github.com/roster-dev/roster" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/roster /usr/local/bin/roster
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/roster"]
CMD ["run"]
