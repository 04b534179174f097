# syntax=docker/dockerfile:1
# Build: docker build -t mixpanel-actions .
# Run:   docker run -p 8080:8080 -e MIXPANEL_PROJECT_TOKEN=... mixpanel-actions

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin mixpanel-actions

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home app
WORKDIR /app
COPY --from=build /src/target/release/mixpanel-actions /usr/local/bin/mixpanel-actions
COPY config ./config
RUN mkdir -p /app/data && chown app /app/data
USER app
# The spool: mount a volume here so accepted events survive the container.
VOLUME ["/app/data"]
EXPOSE 8080
ENV RUST_LOG=info
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["mixpanel-actions", "--log-format", "json"]
CMD ["serve", "--config", "config/default.toml"]
