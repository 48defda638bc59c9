# syntax=docker/dockerfile:1
# The sluice image: the one binary that launches, schedules and works (ghcr.io/sluice-dev/sluice).
#   docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds; the
# binary is copied out in the same step because the target/ mount is gone after it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
    && cp target/release/sluice /usr/local/bin/sluice

# glibc and libgcc only, no shell; `nonroot` is uid 65532, which the manifests require.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER 65532:65532
# Pods mount an emptyDir here; the root filesystem is read-only.
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/sluice"]
