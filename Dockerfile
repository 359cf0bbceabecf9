# syntax=docker/dockerfile:1
#
# Every binary of the workspace, built once, and one small image per binary:
#
#   docker build --target order-service -t shop-mesh/order-service .
#
# Targets: user-service, product-service, order-service, payment-service, gateway, shop.
# Multi-arch: `docker buildx build --platform linux/amd64,linux/arm64 --target …`. The builder runs on
# the build machine's own platform and cross-compiles for the other one, so rustc never runs under
# QEMU emulation; the runtime stages run no command, so they need no emulation either.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-eo", "pipefail", "-c"]
WORKDIR /build

# The Rust target of the image's platform, and a C cross toolchain when it is not the build
# machine's own: aws-lc-sys, ring and the bundled SQLite compile C code.
# Unpinned apt versions: the packages come from the pinned bookworm image's own suite, which only
# takes security fixes, and Debian drops a superseded version from its mirror (a pin would break).
# hadolint ignore=DL3008
RUN case "$TARGETARCH" in \
        amd64) target=x86_64-unknown-linux-gnu ;; \
        arm64) target=aarch64-unknown-linux-gnu ;; \
        *) echo "unsupported TARGETARCH: $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    echo "$target" > /rust-target; \
    if [ "$target" != "$(rustc -vV | sed -n 's/^host: //p')" ]; then \
        gnu="${target%%-*}"; \
        apt-get update; \
        apt-get install -y --no-install-recommends "gcc-${gnu//_/-}-linux-gnu" "libc6-dev-${TARGETARCH}-cross"; \
        rm -rf /var/lib/apt/lists/*; \
        rustup target add "$target"; \
    fi
# Debian names the native compiler with its triplet too, so these hold for native builds as well.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TERM_COLOR=never

# Dependency layer: only the manifests and the lock file, with empty crates in place of the sources,
# so the next RUN (every crates.io dependency, compiled) is reused until a manifest or Cargo.lock
# changes. protos/build.rs is a stub too: it still makes Cargo compile protox and tonic-prost-build
# (build-dependencies are built only for a package with a build script), while the .proto files
# stay out of this layer and a contract change does not rebuild every dependency.
COPY Cargo.toml Cargo.lock ./
COPY protos/Cargo.toml protos/
COPY common/Cargo.toml common/
COPY services/user/Cargo.toml services/user/
COPY services/product/Cargo.toml services/product/
COPY services/order/Cargo.toml services/order/
COPY services/payment/Cargo.toml services/payment/
COPY services/gateway/Cargo.toml services/gateway/
RUN for crate in . protos common services/user services/product services/order services/payment services/gateway; do \
        mkdir -p "$crate/src"; \
        : > "$crate/src/lib.rs"; \
    done; \
    for crate in . services/user services/product services/order services/payment services/gateway; do \
        echo 'fn main() {}' > "$crate/src/main.rs"; \
    done; \
    echo 'fn main() {}' > protos/build.rs; \
    cargo build --release --locked --workspace --bins --target "$(cat /rust-target)"

# The real sources: protos (build.rs compiles them with protox), the crates, the migrations that
# sqlx::migrate! embeds and kong/kong.yaml that the gateway embeds with include_str!.
COPY protos/ protos/
COPY common/ common/
COPY services/ services/
COPY src/ src/
COPY kong/kong.yaml kong/
# COPY keeps the files' own modification times, which can be older than the stub build's output,
# and Cargo judges a workspace crate fresh by those times: a crate could keep its empty stub.
# Touching the sources rebuilds every workspace crate (and protos/build.rs); dependencies stay.
RUN find protos common services src -name '*.rs' -exec touch {} +; \
    target="$(cat /rust-target)"; \
    cargo build --release --locked --workspace --bins --target "$target"; \
    mkdir /out; \
    for bin in user-service product-service order-service payment-service gateway shop; do \
        cp "target/$target/release/$bin" /out/; \
    done

# Distroless with glibc and CA certificates, no shell. UID 65532 is the image's `nonroot` user,
# not 1337, which Istio reserves for its sidecar. The services write nothing to disk when given
# PostgreSQL and RabbitMQ URLs, so a read-only root filesystem works; the binaries are root-owned
# and not writable by the user they run as.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.vendor="shop mesh" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
USER 65532:65532

FROM runtime AS user-service
LABEL org.opencontainers.image.title="user-service" \
      org.opencontainers.image.description="The shop mesh's user service: accounts, tokens, JWKS"
COPY --from=builder /out/user-service /usr/local/bin/user-service
# gRPC, metrics
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/user-service"]

FROM runtime AS product-service
LABEL org.opencontainers.image.title="product-service" \
      org.opencontainers.image.description="The shop mesh's product service: catalogue and stock"
COPY --from=builder /out/product-service /usr/local/bin/product-service
EXPOSE 50052 9090
ENTRYPOINT ["/usr/local/bin/product-service"]

FROM runtime AS order-service
LABEL org.opencontainers.image.title="order-service" \
      org.opencontainers.image.description="The shop mesh's order service: checkout and orders"
COPY --from=builder /out/order-service /usr/local/bin/order-service
EXPOSE 50053 9090
ENTRYPOINT ["/usr/local/bin/order-service"]

FROM runtime AS payment-service
LABEL org.opencontainers.image.title="payment-service" \
      org.opencontainers.image.description="The shop mesh's payment service: charges and refunds"
COPY --from=builder /out/payment-service /usr/local/bin/payment-service
EXPOSE 50054 9090
ENTRYPOINT ["/usr/local/bin/payment-service"]

FROM runtime AS gateway
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Local stand-in for Kong: REST to gRPC transcoding"
COPY --from=builder /out/gateway /usr/local/bin/gateway
# HTTP, metrics
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/gateway"]

# Last, so a plain `docker build .` gives the operator CLI.
FROM runtime AS shop
LABEL org.opencontainers.image.title="shop" \
      org.opencontainers.image.description="Operator CLI for the shop mesh: dead letters, load, shop up"
COPY --from=builder /out/shop /usr/local/bin/shop
ENTRYPOINT ["/usr/local/bin/shop"]
