# syntax=docker/dockerfile:1
# gce_metadata_server as a container: one self-contained executable on a distroless base, with the tpm2-tss
# libraries `-tpm` loads. One Dockerfile for linux/amd64 and linux/arm64:
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t gce-metadata-server \
#     --build-arg BUILD_VERSION=0.1.0 --build-arg BUILD_COMMIT=$(git rev-parse --short=12 HEAD) \
#     --build-arg BUILD_DATE_ISO=$(git show -s --format=%cI HEAD) .
#   docker run --rm -p 8080:8080 gce-metadata-server
#   docker run --rm -p 8080:8080 -v "$PWD/config.json:/config/config.json:ro" \
#     gce-metadata-server -interface 0.0.0.0 -configFile /config/config.json
#   docker run --rm -p 8080:8080 --device /dev/tpmrm0 --group-add "$(stat -c %g /dev/tpmrm0)" \
#     gce-metadata-server -interface 0.0.0.0 -tpm -persistentHandle 0x81008001
#
# Arguments after the image name replace the default ones below, so repeat `-interface 0.0.0.0` with your own.
# What the final image holds is listed in scripts/image-contents.ts; `npm run rootfs -- DIR` lays out the same tree
# without Docker (the tests run the server in it).

# --- build: runs on the builder's own platform and cross-compiles for the target (no emulation needed) ----------
FROM --platform=$BUILDPLATFORM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# No .git in the build context: version facts come from build arguments (scripts/build.ts reads them).
ARG BUILD_VERSION
ARG BUILD_COMMIT=unknown
ARG BUILD_DATE_ISO
ENV BUILD_VERSION=${BUILD_VERSION} BUILD_COMMIT=${BUILD_COMMIT} BUILD_DATE_ISO=${BUILD_DATE_ISO}
ARG TARGETARCH
# The executable for TARGETARCH (Bun's bun-linux-x64 or bun-linux-arm64) and the tpm2-tss libraries of that
# architecture, from Debian's packages, staged in /layer exactly as the final stage holds them.
RUN node_modules/.bin/bun scripts/rootfs.ts /layer --layer --arch "${TARGETARCH}"

# --- run: distroless with glibc and libssl (`cc`, not `static`: the executable links glibc dynamically) ----------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /layer/ /
# Writable home for -issuerKey files; without ./config.json here the bundled example VM is served.
WORKDIR /home/nonroot
USER nonroot:nonroot
EXPOSE 8080
# No shell or curl here: the executable probes itself (project/project-id with the header, 2 s limit).
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/gce_metadata_server", "healthcheck", "-url", "http://127.0.0.1:8080"]
ENTRYPOINT ["/usr/local/bin/gce_metadata_server"]
# The server binds 127.0.0.1 by default. Inside a container that is the container's own loopback, unreachable
# from the host's published port and from other containers, so the image listens on all interfaces instead.
CMD ["-interface", "0.0.0.0"]
