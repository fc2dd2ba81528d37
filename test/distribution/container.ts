/**
 * Run a program inside an image tree (scripts/rootfs.ts) the way a container runtime runs the image, without one:
 * a private mount namespace (every mount vanishes with the process), a read-only overlay view of the tree, `/proc`,
 * a read-only `/sys`, a tmpfs `/dev` holding the device nodes runtimes create, then `chroot` as nonroot (65532). The
 * network is the host's, so a server inside reaches a swtpm on the host's loopback and the test reaches the server.
 *
 * A foreign architecture runs under qemu's user-mode emulator. binfmt_misc is not registered on these machines, so
 * the static emulator sits in a second, read-only overlay layer (/.emulator) and is named as the program: the only
 * file in the view that is not the image's, and it is the CPU, not a library.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARCHES, NONROOT, type Arch } from "../../scripts/image-contents.ts";

/** What `docker run` puts in a distroless nonroot container's environment. */
export const CONTAINER_ENV = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  HOME: "/home/nonroot",
  HOSTNAME: "gce-metadata-test",
} as const;

const HOST_ARCH: Arch = process.arch === "arm64" ? "arm64" : "x64";
const QEMU: Record<Arch, string> = { x64: "qemu-x86_64-static", arm64: "qemu-aarch64-static" };

/** Mount the view, then exec chroot. Positional: tree, view, lower layer, then the program and its arguments. */
const SCRIPT = `set -eu
tree=$1 view=$2 lower=$3
shift 3
mount -t overlay overlay -o "lowerdir=$lower:$tree" "$view"
mount -t proc -o nosuid,nodev,noexec proc "$view/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$view/sys"
mount -t tmpfs -o nosuid,mode=755,size=65536k tmpfs "$view/dev"
mknod -m 666 "$view/dev/null" c 1 3
mknod -m 666 "$view/dev/zero" c 1 5
mknod -m 666 "$view/dev/full" c 1 7
mknod -m 666 "$view/dev/random" c 1 8
mknod -m 666 "$view/dev/urandom" c 1 9
mknod -m 666 "$view/dev/tty" c 5 0
ln -s /proc/self/fd "$view/dev/fd"
ln -s /proc/self/fd/0 "$view/dev/stdin"
ln -s /proc/self/fd/1 "$view/dev/stdout"
ln -s /proc/self/fd/2 "$view/dev/stderr"
mkdir "$view/dev/pts" "$view/dev/shm"
mount -t devpts -o newinstance,nosuid,noexec,ptmxmode=0666,mode=0620 devpts "$view/dev/pts"
ln -s pts/ptmx "$view/dev/ptmx"
mount -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=65536k shm "$view/dev/shm"
exec chroot --userspec=${NONROOT}:${NONROOT} --groups=${NONROOT} "$view" "$@"
`;

export interface Container {
  tree: string;
  arch: Arch;
  /** `argv` (absolute paths inside the tree) as a command line for the host: run it with Bun.spawn or runCli. */
  command(argv: readonly string[]): string[];
  /** Run to completion; stdout, stderr and the exit code. */
  run(argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Remove the scratch directories (the tree is the caller's). */
  dispose(): void;
}

/** Throws, naming the Debian package, when a host tool is missing. */
function need(tool: string, pkg: string): void {
  if (!Bun.which(tool)) throw new Error(`${tool} is not installed: apt-get install -y ${pkg}`);
}

export function container(tree: string, arch: Arch): Container {
  if (process.getuid?.() !== 0) throw new Error("running an image tree needs root (mounts and chroot)");
  need("unshare", "util-linux");
  const scratch = mkdtempSync(join(tmpdir(), `gce-container-${arch}-`));
  const view = join(scratch, "view");
  const lower = join(scratch, "layer");
  mkdirSync(view);
  mkdirSync(lower);
  const emulator: string[] = [];
  if (arch !== HOST_ARCH) {
    const qemu = Bun.which(QEMU[arch]);
    if (!qemu) throw new Error(`${QEMU[arch]} is not installed: apt-get install -y qemu-user-static`);
    mkdirSync(join(lower, ".emulator"));
    copyFileSync(qemu, join(lower, ".emulator", QEMU[arch]));
    emulator.push(`/.emulator/${QEMU[arch]}`);
  }
  const command = (argv: readonly string[]) => [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    SCRIPT,
    "sh",
    tree,
    view,
    lower,
    ...emulator,
    ...argv,
  ];
  return {
    tree,
    arch,
    command,
    async run(argv) {
      const p = Bun.spawn(command(argv), { env: { ...CONTAINER_ENV }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { code, stdout, stderr };
    },
    dispose: () => rmSync(scratch, { recursive: true, force: true }),
  };
}

/** The dynamic loader of an architecture, as the image holds it. */
export const loaderOf = (arch: Arch): string => ARCHES[arch].loader;

/** `ld.so --list` output: each dependency's name and where the loader found it (undefined: not found). */
export function parseLdList(text: string): Array<{ name: string; path: string | undefined }> {
  const out: Array<{ name: string; path: string | undefined }> = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim().replace(/\s*\(0x[0-9a-f]+\)$/, "");
    if (!line) continue;
    const arrow = line.indexOf(" => ");
    if (arrow >= 0) {
      const name = line.slice(0, arrow);
      const path = line.slice(arrow + 4);
      out.push({ name, path: path === "not found" ? undefined : path });
    } else if (line.startsWith("/")) out.push({ name: line, path: line });
    // The vDSO (linux-vdso.so.1, or a bare address under qemu) is the kernel's, not a file.
  }
  return out;
}
