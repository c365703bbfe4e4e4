# Builds the umkm-pulse consumer services. docker-compose.yml uses it; it cannot be built on the
# development machines of this project (no Docker engine), so keep it in step with Cargo.toml.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p qris-consumer

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 umkm
COPY --from=build /src/target/release/qris-consumer /usr/local/bin/qris-consumer
COPY schemas /opt/umkm/schemas
USER umkm
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/qris-consumer"]
CMD ["run"]
