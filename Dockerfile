# Builds the umkm-pulse consumer services (one image, three binaries; pick one with `entrypoint`) and the umkm-dlq tool. docker-compose.yml uses it; it cannot be built on the
# development machines of this project (no Docker engine), so keep it in step with Cargo.toml.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p qris-consumer -p noncash-consumer -p merchant-consumer -p umkm-dlq

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 umkm
COPY --from=build /src/target/release/qris-consumer /src/target/release/noncash-consumer \
     /src/target/release/merchant-consumer /src/target/release/umkm-dlq /usr/local/bin/
COPY schemas /opt/umkm/schemas
USER umkm
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/qris-consumer"]
CMD ["run"]
