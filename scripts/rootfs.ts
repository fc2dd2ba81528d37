#!/usr/bin/env bun
/**
 * Assemble the container image's root filesystem without Docker, from Debian packages (scripts/image-contents.ts
 * says what goes in).
 *
 *   npm run rootfs -- DIR [--arch x64|arm64] [--executable PATH]     the image: distroless cc-debian12 + our layer
 *   bun scripts/rootfs.ts DIR --layer --arch amd64                    only what the Dockerfile copies in (its build stage)
 *
 * A package installed on this machine for the wanted architecture is copied from its installed files (`dpkg -L`);
 * any other is downloaded with `apt-get download` (a private apt state under .tmp/apt/<arch>, so the machine's own
 * apt configuration is left alone) and unpacked with `dpkg-deb -x`. The executable is built for the architecture
 * unless --executable names one. DIR must be empty or absent. Run as root, so owners are right (/home/nonroot).
 */
import { $ } from "bun";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { ARCHES, BASE, LAYER, parseArch, type Arch } from "./image-contents.ts";
import { BINARY_NAME, compile, versionDefines, versionFacts, withStartupOrder } from "./build.ts";

const ROOT = resolve(import.meta.dir, "..");
const APT_CACHE = join(ROOT, ".tmp", "apt");

/** Where a package's files come from: the machine itself (root "/") or a `dpkg-deb -x` directory. */
interface PackageFiles {
  name: string;
  root: string;
  /** Absolute paths as the package lists them (directories first). */
  paths: string[];
  from: "installed" | "downloaded";
}

/** What was placed in the tree. */
export interface Assembly {
  dir: string;
  arch: Arch;
  files: number;
  bytes: number;
  /** Packages and where each came from. */
  packages: Record<string, PackageFiles["from"]>;
  /** Paths the layer added (executable and libraries), absolute inside the tree. */
  layer: string[];
}

export const hostArch = (): Arch => (process.arch === "arm64" ? "arm64" : "x64");

/** The directories usrmerge turned into symlinks on this machine: packages ship them as directories. */
const MERGED_DIRS = new Set(["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/libo32"]);

async function installedFiles(name: string, arch: Arch): Promise<PackageFiles | undefined> {
  if (!Bun.which("dpkg-query")) return undefined;
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const q = await $`dpkg-query -W -f=${"${Architecture} ${db:Status-Status}\\n"} ${name}`.quiet().nothrow();
  if (q.exitCode !== 0) return undefined;
  const want = ARCHES[arch].debian;
  const line = q.stdout
    .toString()
    .split("\n")
    .map((l) => l.trim().split(" "))
    .find(([a, status]) => status === "installed" && (a === want || a === "all"));
  if (!line) return undefined;
  const spec = line[0] === "all" ? name : `${name}:${want}`;
  const l = await $`dpkg -L ${spec}`.quiet().nothrow();
  if (l.exitCode !== 0) return undefined;
  const paths = l.stdout
    .toString()
    .split("\n")
    .filter((p) => p.startsWith("/") && p !== "/.");
  return { name, root: "/", paths, from: "installed" };
}

/** apt-get against a private state directory whose native architecture is the target's. */
function aptOptions(arch: Arch): string[] {
  const d = join(APT_CACHE, ARCHES[arch].debian);
  const debArch = ARCHES[arch].debian;
  return [
    `-oAPT::Architecture=${debArch}`,
    `-oAPT::Architectures::=${debArch}`,
    `-oDir::State::Lists=${d}/lists`,
    `-oDir::State::Status=/dev/null`,
    `-oDir::Cache=${d}/cache`,
    "-oDir::Cache::pkgcache=",
    "-oDir::Cache::srcpkgcache=",
    "-oDebug::NoLocking=1",
    "-oAPT::Sandbox::User=root",
    "-qq",
  ];
}

/**
 * `apt-get download NAME` into `cwd`, after `apt-get update` when the lists do not know it yet. Runs under an
 * exclusive lock per architecture (flock): tests assemble several trees at once, and two updates of one private
 * lists directory at the same time trip over each other's partial files.
 */
async function aptDownload(arch: Arch, name: string, cwd: string): Promise<{ ok: boolean; out: string }> {
  const opts = aptOptions(arch);
  const script = 'apt-get "$@" download "$PKG" || { apt-get "$@" update && apt-get "$@" download "$PKG"; }';
  const lock = join(APT_CACHE, `${ARCHES[arch].debian}.lock`);
  const p = Bun.spawn(["flock", lock, "sh", "-c", script, "sh", ...opts], {
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    env: { ...process.env, PKG: name },
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { ok: code === 0, out: out + err };
}

/** The cached .deb of a package for an architecture, downloading it (and the package lists) when missing. */
async function debFile(name: string, arch: Arch): Promise<string> {
  const base = join(APT_CACHE, ARCHES[arch].debian);
  const debs = join(base, "debs");
  for (const d of [debs, join(base, "lists/partial"), join(base, "cache/archives/partial")]) mkdirSync(d, { recursive: true });
  const find = () => readdirSync(debs).find((f) => f.startsWith(`${name}_`) && f.endsWith(".deb"));
  let found = find();
  if (found) return join(debs, found);
  if (!Bun.which("apt-get")) throw new Error(`${name} (${arch}) is not installed here and apt-get is missing to download it`);
  const r = await aptDownload(arch, name, debs);
  found = find();
  if (!r.ok || !found) throw new Error(`apt-get download ${name} (${ARCHES[arch].debian}) failed:\n${r.out}`);
  return join(debs, found);
}

function walk(root: string, rel = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = `${rel}/${e.name}`;
    out.push(p);
    if (e.isDirectory()) out.push(...walk(root, p));
  }
  return out;
}

async function downloadedFiles(name: string, arch: Arch): Promise<PackageFiles> {
  const deb = await debFile(name, arch);
  const x = join(APT_CACHE, ARCHES[arch].debian, "x", name);
  rmSync(x, { recursive: true, force: true });
  mkdirSync(x, { recursive: true });
  const r = await $`dpkg-deb -x ${deb} ${x}`.quiet().nothrow();
  if (r.exitCode !== 0) throw new Error(`dpkg-deb -x ${deb} failed: ${r.stderr.toString()}`);
  return { name, root: x, paths: walk(x), from: "downloaded" };
}

const listed = new Map<string, Promise<PackageFiles>>();

/** A package's files: installed ones when this machine has it for the architecture, else the downloaded .deb's. */
export function packageFiles(name: string, arch: Arch): Promise<PackageFiles> {
  const key = `${name}:${arch}`;
  let p = listed.get(key);
  if (!p) {
    p = (async () => (await installedFiles(name, arch)) ?? (await downloadedFiles(name, arch)))();
    p.catch(() => listed.delete(key));
    listed.set(key, p);
  }
  return p;
}

/** Copies into the tree, never through a symlink inside it (an absolute link would lead out of it). */
class Tree {
  files = 0;
  bytes = 0;
  constructor(readonly dir: string) {}

  /** Make the parent directories of `path`; false when one of them is a symlink. */
  private parents(path: string): boolean {
    const parts = path.split("/").filter(Boolean);
    let cur = this.dir;
    for (const part of parts.slice(0, -1)) {
      cur = join(cur, part);
      let st: ReturnType<typeof lstatSync> | undefined;
      try {
        st = lstatSync(cur);
      } catch {
        mkdirSync(cur, { mode: 0o755 });
        continue;
      }
      if (!st.isDirectory()) return false;
    }
    return true;
  }

  /** Place `path` (absolute in the tree) as a copy of `source`; returns false when it was not placed. */
  place(path: string, source: string, opts: { asDirectory?: boolean; mode?: number } = {}): boolean {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(source);
    } catch {
      return false; // listed by dpkg but removed from this machine (e.g. excluded documentation)
    }
    if (!this.parents(path)) return false;
    const dest = join(this.dir, path);
    const existing = (() => {
      try {
        return lstatSync(dest);
      } catch {
        return undefined;
      }
    })();
    if (st.isDirectory() || opts.asDirectory) {
      if (!existing) mkdirSync(dest);
      else if (!existing.isDirectory()) return false;
      chmodSync(dest, opts.mode ?? (st.isDirectory() ? st.mode & 0o7777 : 0o755));
      return true;
    }
    if (existing?.isDirectory()) return false;
    if (existing) rmSync(dest);
    if (st.isSymbolicLink()) symlinkSync(readlinkSync(source), dest);
    else {
      copyFileSync(source, dest);
      chmodSync(dest, opts.mode ?? st.mode & 0o7777);
      this.bytes += st.size;
    }
    this.files++;
    return true;
  }

  write(path: string, text: string, mode = 0o644): void {
    if (!this.parents(path)) throw new Error(`cannot write ${path}: a parent is a symlink`);
    const dest = join(this.dir, path);
    rmSync(dest, { force: true });
    writeFileSync(dest, text, { mode });
    chmodSync(dest, mode);
    this.files++;
    this.bytes += Buffer.byteLength(text);
  }

  directory(path: string, uid: number, mode: number): void {
    if (!this.parents(path)) throw new Error(`cannot make ${path}: a parent is a symlink`);
    const dest = join(this.dir, path);
    if (!existsSync(dest)) mkdirSync(dest);
    chmodSync(dest, mode);
    if (process.getuid?.() === 0) chownSync(dest, uid, uid);
  }
}

function placePackage(tree: Tree, pkg: PackageFiles): void {
  for (const p of pkg.paths) {
    const source = pkg.root === "/" ? p : join(pkg.root, p);
    const asDirectory = pkg.root === "/" && MERGED_DIRS.has(p) && lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink();
    tree.place(p, source, { asDirectory: Boolean(asDirectory) });
  }
}

/** distroless's base layers: packages whole, the CA bundle, users and groups, nsswitch.conf, directories. */
async function placeBase(tree: Tree, arch: Arch, record: Assembly["packages"]): Promise<void> {
  for (const name of BASE.packages) {
    const pkg = await packageFiles(name, arch);
    record[name] = pkg.from;
    placePackage(tree, pkg);
  }
  const ca = await packageFiles(BASE.caCertificates.package, arch);
  record[ca.name] = ca.from;
  const src = (p: string) => (ca.root === "/" ? p : join(ca.root, p));
  const certs = ca.paths.filter((p) => p.startsWith("/usr/share/ca-certificates/") && p.endsWith(".crt")).sort();
  let bundle = "";
  for (const c of certs) {
    const pem = await Bun.file(src(c)).text();
    bundle += pem.endsWith("\n") ? pem : `${pem}\n`;
  }
  tree.write(BASE.caCertificates.bundle, bundle);
  const copyright = "/usr/share/doc/ca-certificates/copyright";
  tree.place(copyright, src(copyright));
  tree.write("/etc/passwd", `${BASE.passwd.join("\n")}\n`);
  tree.write("/etc/group", `${BASE.group.join("\n")}\n`);
  tree.write("/etc/nsswitch.conf", `${BASE.nsswitch.join("\n")}\n`);
  for (const d of BASE.directories) tree.directory(d.path, d.uid, d.mode);
}

/** The Dockerfile's layer: the tpm2-tss libraries (soname link and its file) and the executable. */
async function placeLayer(tree: Tree, arch: Arch, executable: string, record: Assembly["packages"]): Promise<string[]> {
  const placed: string[] = [];
  const triplet = ARCHES[arch].triplet;
  for (const [name, sonames] of Object.entries(LAYER.libraries)) {
    const pkg = await packageFiles(name, arch);
    record[name] = pkg.from;
    for (const soname of sonames) {
      const path = pkg.paths.find((p) => p === `/usr/lib/${triplet}/${soname}` || p === `/lib/${triplet}/${soname}`);
      if (!path) throw new Error(`${name} (${arch}) has no ${soname} under /usr/lib/${triplet}`);
      const source = pkg.root === "/" ? path : join(pkg.root, path);
      const wanted = [path];
      if (lstatSync(source).isSymbolicLink()) {
        const target = readlinkSync(source);
        if (target.includes("/")) throw new Error(`${soname} in ${name} links outside its directory (${target})`);
        wanted.push(join(dirname(path), target));
      }
      for (const p of wanted) {
        if (!tree.place(p, pkg.root === "/" ? p : join(pkg.root, p))) throw new Error(`could not place ${p} from ${name}`);
        placed.push(p);
      }
    }
  }
  if (!tree.place(LAYER.executable, executable, { mode: 0o755 })) throw new Error(`could not place ${LAYER.executable}`);
  placed.push(LAYER.executable);
  return placed;
}

/** Build the executable for `arch` into a temporary directory (this machine's own runtime when it matches). */
export async function buildExecutable(arch: Arch): Promise<string> {
  const out = await mkdtemp(join(tmpdir(), "gce-rootfs-build-"));
  const base = { defines: versionDefines(await versionFacts()) };
  return withStartupOrder(base, (bytecodeOrder) =>
    compile({
      ...base,
      outfile: join(out, BINARY_NAME),
      ...(bytecodeOrder ? { bytecodeOrder } : {}),
      ...(arch === hostArch() ? {} : { target: ARCHES[arch].bunTarget }),
    }),
  );
}

export interface AssembleOptions {
  arch?: Arch;
  /** The executable to put in; built when omitted. */
  executable?: string;
  /** Only the Dockerfile's layer (for its build stage), not the base. */
  layerOnly?: boolean;
}

/** Assemble the tree in `dir` (empty or absent). */
export async function assemble(dir: string, opts: AssembleOptions = {}): Promise<Assembly> {
  const arch = opts.arch ?? hostArch();
  mkdirSync(dir, { recursive: true });
  if (readdirSync(dir).length) throw new Error(`${dir} is not empty: give an empty or new directory`);
  const tree = new Tree(resolve(dir));
  const packages: Assembly["packages"] = {};
  if (!opts.layerOnly) await placeBase(tree, arch, packages);
  const executable = opts.executable ?? (await buildExecutable(arch));
  const layer = await placeLayer(tree, arch, executable, packages);
  if (!opts.executable) rmSync(dirname(executable), { recursive: true, force: true });
  return { dir: tree.dir, arch, files: tree.files, bytes: tree.bytes, packages, layer };
}

const USAGE = "usage: npm run rootfs -- DIR [--arch x64|arm64] [--executable PATH] [--layer]";

function parseArgs(argv: string[]): { dir: string } & AssembleOptions {
  let dir: string | undefined;
  const o: AssembleOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value; ${USAGE}`);
      return v;
    };
    if (a === "--arch") {
      const v = value();
      const arch = parseArch(v);
      if (!arch) throw new Error(`unknown --arch ${v}: use x64 (amd64) or arm64`);
      o.arch = arch;
    } else if (a === "--executable") o.executable = resolve(value());
    else if (a === "--layer") o.layerOnly = true;
    else if (a.startsWith("-") || dir !== undefined) throw new Error(`unexpected argument ${a}; ${USAGE}`);
    else dir = a;
  }
  if (dir === undefined) throw new Error(`no directory given; ${USAGE}`);
  return { dir, ...o };
}

if (import.meta.main) {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(2);
  }
  try {
    const a = await assemble(args.dir, args);
    const from = Object.entries(a.packages)
      .map(([n, f]) => `${n} (${f})`)
      .join(", ");
    process.stderr.write(
      `${a.dir} (${a.arch}): ${a.files} files, ${(a.bytes / 1e6).toFixed(1)} MB\n  packages: ${from}\n  layer: ${a.layer.join(" ")}\n`,
    );
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
