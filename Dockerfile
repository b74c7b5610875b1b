# syntax=docker/dockerfile:1
#
# harbor-iam-webhook image: a static binary on an empty base.
#
#   docker build -t REGISTRY/harbor-iam-webhook:TAG .
#   docker push REGISTRY/harbor-iam-webhook:TAG
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (the
# build stage runs on each target platform, emulated where needed).
#
# The binary needs no C library at run time (glibc linked statically with
# crt-static; TLS is rustls with ring, no OpenSSL), no shell, no CA roots (it
# makes no outbound TLS connection), so the runtime image is `scratch` with
# nothing in it but the binary.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-trixie AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# Strip symbols from the release binary (smaller image; panics still print
# their message and location).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
COPY . .
# --target is explicit so that RUSTFLAGS reach the binary but not build
# scripts and proc-macros (which cannot be linked statically).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(uname -m)-unknown-linux-gnu" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --target "$target" --bin harbor-iam-webhook \
    && install -D -m 0555 "target/$target/release/harbor-iam-webhook" /out/harbor-iam-webhook \
    && /out/harbor-iam-webhook --help >/dev/null \
    && if ldd /out/harbor-iam-webhook 2>/dev/null | grep -q '=>'; then \
         echo "harbor-iam-webhook is dynamically linked" >&2; exit 1; \
       fi

FROM scratch
LABEL org.opencontainers.image.title="harbor-iam-webhook" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that switches Harbor pods to AWS RDS IAM database authentication"
COPY --from=build /out/harbor-iam-webhook /usr/local/bin/harbor-iam-webhook
# The webhook's own allocations go to mimalloc (src/main.rs); glibc's malloc serves what glibc
# itself allocates. A deeper per-thread cache for it, as before mimalloc: benches/load.sh gives
# both of its servers this line's value, so the ceiling it measures against, which keeps glibc's
# malloc, runs with it too (benches/README.md, lab notes). Tunables work in a static glibc binary.
ENV GLIBC_TUNABLES=glibc.malloc.tcache_count=128
# Numeric, non-root (the Deployment's runAsUser/runAsGroup match).
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/harbor-iam-webhook"]
CMD ["serve"]
