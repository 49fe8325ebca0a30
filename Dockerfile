# syntax=docker/dockerfile:1
#
# The `seckill` engine as a container image.
#
#   docker build -t seckill .
#   docker run --rm -p 3030:3030 seckill                       # embedded mode (SQLite in a volume)
#   docker compose -f deploy/compose.yaml up --build           # distributed mode: see deploy/README.md
#
# Builder: the full rust:1-bookworm image already has what the native dependencies need, which
# we install explicitly anyway so the list is documented:
#   * rdkafka-sys (default features) builds the bundled librdkafka with its own `./configure`
#     (a bash script) and `make`: needs make, gcc and bash; no cmake (the `cmake-build` feature is
#     off), no OpenSSL/SASL/zstd/curl (features off).
#   * libz-sys links the system zlib when pkg-config finds zlib1g-dev (else it compiles zlib from
#     source with cc); the runtime image has zlib1g (it is part of every Debian base image).
#   * rusqlite is `bundled` (SQLite compiled by cc); sqlx, redis and hyper are built without TLS.
FROM rust:1-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc g++ pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole context (see .dockerignore): Cargo.toml, Cargo.lock, src/, crates/ (the workspace's
# API types and load generator, which the binary links) and migrations/ (embedded at compile
# time by sqlx::migrate!) are what the build reads.
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit); the binary is copied
# out of the cached target dir because a cache mount is not part of the image. The release
# profile keeps debug info for profiling (~100 MB); the image drops it but keeps the symbol
# table, so backtraces still name functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin seckill \
    && cp target/release/seckill /usr/local/bin/seckill \
    && strip --strip-debug /usr/local/bin/seckill

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 seckill \
    && useradd --system --uid 10001 --gid seckill --home-dir /var/lib/seckill --shell /usr/sbin/nologin seckill \
    && mkdir -p /var/lib/seckill/data \
    && chown -R seckill:seckill /var/lib/seckill
COPY --from=builder /usr/local/bin/seckill /usr/local/bin/seckill
# Numeric so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/seckill
# Embedded mode keeps its SQLite file here: mount a volume on it, or the orders die with the
# container. The distributed mode does not use it.
ENV SECKILL_DATA_DIR=/var/lib/seckill/data
EXPOSE 3030
# No HEALTHCHECK: the slim image has no curl or wget, and the listen port is a runtime choice.
# Probe `GET /healthz` (alive) and `GET /readyz` (backends reachable, else 503) from the
# orchestrator; deploy/compose.yaml does it with bash's /dev/tcp.
# SIGTERM (docker stop) drains in-flight purchases before exiting: give it a grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["seckill"]
CMD ["serve", "--listen", "0.0.0.0:3030"]
