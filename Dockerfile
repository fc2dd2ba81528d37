# gce_metadata_server as a container: one self-contained executable on a distroless base.
#
#   docker build -t gce-metadata-server \
#     --build-arg BUILD_VERSION=0.1.0 --build-arg BUILD_COMMIT=$(git rev-parse --short=12 HEAD) \
#     --build-arg BUILD_DATE_ISO=$(git show -s --format=%cI HEAD) .
#   docker run --rm -p 8080:8080 gce-metadata-server
#   docker run --rm -p 8080:8080 -v "$PWD/config.json:/config/config.json:ro" \
#     gce-metadata-server -interface 0.0.0.0 -configFile /config/config.json
#
# Arguments after the image name replace the default ones below, so repeat `-interface 0.0.0.0` with your own.
# `-tpm` needs the tpm2-tss libraries, which this base image does not have.

# --- build: the pinned Bun comes from package-lock.json (devDependency), as on a developer machine ---------------
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# No .git in the build context: version facts come from build arguments (scripts/build.ts reads them).
ARG BUILD_VERSION
ARG BUILD_COMMIT=unknown
ARG BUILD_DATE_ISO
ENV BUILD_VERSION=${BUILD_VERSION} BUILD_COMMIT=${BUILD_COMMIT} BUILD_DATE_ISO=${BUILD_DATE_ISO}
RUN npm run build && ./dist/gce_metadata_server -version

# --- run: distroless with glibc (`cc`, not `static`: a `bun build --compile` executable links glibc dynamically) -
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/dist/gce_metadata_server /usr/local/bin/gce_metadata_server
# Writable home for -issuerKey files; without ./config.json here the bundled example VM is served.
WORKDIR /home/nonroot
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gce_metadata_server"]
# The server binds 127.0.0.1 by default. Inside a container that is the container's own loopback, unreachable
# from the host's published port and from other containers, so the image listens on all interfaces instead.
CMD ["-interface", "0.0.0.0"]
