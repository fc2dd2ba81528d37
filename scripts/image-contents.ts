/**
 * The container image's contents, in one place. The Dockerfile's build stage and `npm run rootfs` both read this
 * list through scripts/rootfs.ts: the build stage stages LAYER for `COPY --from=build /layer/ /`, and the rootfs
 * script lays BASE (what the distroless base documents it holds) under the same LAYER, so the tree the tests run
 * is the image, file for file.
 */

/** Image platforms: Bun's name, Docker's TARGETARCH, Debian's architecture, the multiarch triplet and the loader. */
export const ARCHES = {
  x64: { docker: "amd64", debian: "amd64", triplet: "x86_64-linux-gnu", loader: "/lib64/ld-linux-x86-64.so.2", bunTarget: "bun-linux-x64" },
  arm64: {
    docker: "arm64",
    debian: "arm64",
    triplet: "aarch64-linux-gnu",
    loader: "/lib/ld-linux-aarch64.so.1",
    bunTarget: "bun-linux-arm64",
  },
} as const;
export type Arch = keyof typeof ARCHES;

/** `x64`, `arm64`, or Docker's `amd64`. */
export function parseArch(s: string): Arch | undefined {
  if (s === "x64" || s === "amd64") return "x64";
  if (s === "arm64" || s === "aarch64") return "arm64";
  return undefined;
}

/** The base image: FROM gcr.io/distroless/cc-debian12:nonroot. */
export const BASE_IMAGE = "gcr.io/distroless/cc-debian12:nonroot";

export const NONROOT = 65532;
export const NOBODY = 65534;

/**
 * What distroless documents for cc-debian12: static (base-files, netbase, tzdata, media-types, CA certificates,
 * /etc/passwd and /etc/group with root, nobody and nonroot, /tmp, home directories, nsswitch.conf), plus glibc and
 * libssl (base), plus the gcc runtime (cc).
 */
export const BASE = {
  /** Debian packages laid down whole. */
  packages: ["base-files", "netbase", "tzdata", "media-types", "libc6", "libssl3", "gcc-12-base", "libgcc-s1", "libgomp1", "libstdc++6"],
  /** Of ca-certificates distroless keeps only the bundle (and the copyright), built from the package's certificates. */
  caCertificates: { package: "ca-certificates", bundle: "/etc/ssl/certs/ca-certificates.crt" },
  passwd: [
    `root:x:0:0:root:/root:/sbin/nologin`,
    `nobody:x:${NOBODY}:${NOBODY}:nobody:/nonexistent:/sbin/nologin`,
    `nonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/sbin/nologin`,
  ],
  group: [`root:x:0:`, `nobody:x:${NOBODY}:`, `tty:x:5:`, `staff:x:50:`, `nonroot:x:${NONROOT}:`],
  nsswitch: [
    "passwd:         compat",
    "group:          compat",
    "shadow:         compat",
    "gshadow:        files",
    "hosts:          files dns",
    "networks:       files",
    "protocols:      db files",
    "services:       db files",
    "ethers:         db files",
    "rpc:            db files",
    "netgroup:       nis",
  ],
  /** Directories with their owner and mode. */
  directories: [
    { path: "/tmp", uid: 0, mode: 0o1777 },
    { path: "/root", uid: 0, mode: 0o700 },
    { path: "/home", uid: 0, mode: 0o755 },
    { path: "/home/nonroot", uid: NONROOT, mode: 0o700 },
  ],
} as const;

/**
 * What the Dockerfile adds: the executable, and the tpm2-tss libraries `-tpm` loads (src/tpm/ffi.ts opens esys,
 * tctildr, mu and rc; the TCTI loader opens the device, swtpm and mssim modules) with exactly their shared-library
 * closure beyond the base: libtss2-sys (needed by esys). Everything else they need (libc, libcrypto) is in the
 * base. Each library is its soname link and the file it names, as the package installs them.
 */
export const LAYER = {
  executable: "/usr/local/bin/gce_metadata_server",
  libraries: {
    "libtss2-esys-3.0.2-0": ["libtss2-esys.so.0"],
    "libtss2-sys1": ["libtss2-sys.so.1"],
    "libtss2-mu0": ["libtss2-mu.so.0"],
    "libtss2-tctildr0": ["libtss2-tctildr.so.0"],
    "libtss2-rc0": ["libtss2-rc.so.0"],
    "libtss2-tcti-device0": ["libtss2-tcti-device.so.0"],
    "libtss2-tcti-swtpm0": ["libtss2-tcti-swtpm.so.0"],
    "libtss2-tcti-mssim0": ["libtss2-tcti-mssim.so.0"],
  } as Record<string, readonly string[]>,
  /** The libraries the program opens itself (the rest are their dependencies or opened by the TCTI loader). */
  entryPoints: [
    "libtss2-esys.so.0",
    "libtss2-tctildr.so.0",
    "libtss2-mu.so.0",
    "libtss2-rc.so.0",
    "libtss2-tcti-device.so.0",
    "libtss2-tcti-swtpm.so.0",
    "libtss2-tcti-mssim.so.0",
  ],
} as const;
