# One image with both programs (the manifests choose the command). Multi-stage: the build stage
# has the toolchain and the -dev packages librdkafka's build needs (OpenSSL, protobuf for
# etcd-client); the runtime stage is Debian slim with only the shared libraries the binaries
# link (libssl3, zlib, ca-certificates), running as a non-root
# user. Build with `cargo xtask deploy image` (docker or podman).
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends protobuf-compiler libprotobuf-dev libssl-dev pkg-config cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p zonal-agent -p zonal-transporter \
 && install -m 0755 target/release/zonal-agent target/release/zonal-transporter /usr/local/bin/

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 zonal \
 && useradd --system --uid 65532 --gid zonal --home-dir /nonexistent --shell /usr/sbin/nologin zonal
COPY --from=build /usr/local/bin/zonal-agent /usr/local/bin/zonal-transporter /usr/local/bin/
USER 65532:65532
ENTRYPOINT []
CMD ["zonal-agent", "--help"]
