/**
 * The image, proven without Docker: `npm run rootfs` lays out what the image holds (distroless cc-debian12 from
 * Debian's packages, plus what the Dockerfile copies in), for x64 and for arm64 (run under qemu's user-mode
 * emulator), and the executable runs in that tree as a container runtime would run it (test/distribution/container.ts):
 * uid 65532, a read-only view, /proc and a container /dev. Nothing of the host's filesystem is reachable from there,
 * so whatever works there needed nothing outside the tree.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, type Stats } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { ARCHES, LAYER, NONROOT, type Arch } from "../../scripts/image-contents.ts";
import { listeningUrl, runCli, type CliProcess } from "../helpers/cli.ts";
import { executableFor } from "../helpers/executable.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools, type GeneratedKey } from "../helpers/tpm2-tools.ts";
import { CONTAINER_ENV, container, parseLdList, type Container } from "./container.ts";

const ROOT = join(import.meta.dir, "../..");
const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const HANDLE = "0x81008001";
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const ARCH_LIST: Arch[] = ["x64", "arm64"];
const work = mkdtempSync(join(tmpdir(), "gce-rootfs-test-"));

interface Image {
  /** The whole image: base and layer. */
  tree: string;
  /** Only the Dockerfile's layer (the build stage's /layer). */
  layerTree: string;
  /** What the script reported for the whole tree. */
  report: { files: number; mb: string };
  box: Container;
}
const images = new Map<Arch, Image>();
const running = new Set<CliProcess>();
let tpm: Swtpm | undefined;
let tools: Tpm2Tools;
let key: GeneratedKey;

/** `bun scripts/rootfs.ts …` as `npm run rootfs -- …` runs it; throws with its stderr when it fails. */
async function rootfs(args: string[]): Promise<string> {
  const p = Bun.spawn([process.execPath, "scripts/rootfs.ts", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`scripts/rootfs.ts ${args.join(" ")} exited ${code}:\n${err}`);
  return err;
}

async function assemble(arch: Arch): Promise<void> {
  const exe = await executableFor(arch);
  const tree = join(work, arch);
  const layerTree = join(work, `${arch}-layer`);
  const [report] = await Promise.all([
    rootfs([tree, "--arch", arch, "--executable", exe]),
    rootfs([layerTree, "--layer", "--arch", arch, "--executable", exe]),
  ]);
  const m = /\((\w+)\): (\d+) files, ([\d.]+) MB/.exec(report);
  if (!m || m[1] !== arch) throw new Error(`unexpected report from scripts/rootfs.ts: ${report}`);
  images.set(arch, { tree, layerTree, report: { files: Number(m[2]), mb: m[3]! }, box: container(tree, arch) });
}

beforeAll(async () => {
  requireTpmTools();
  const setUpTpm = async () => {
    tpm = await startSwtpm();
    tools = await Tpm2Tools.on(tpm);
    key = await tools.generateRsaKey("rootfs");
    await tools.persistKey(key, Number(HANDLE));
  };
  await Promise.all([...ARCH_LIST.map(assemble), setUpTpm()]);
}, 240_000);

afterAll(async () => {
  await Promise.all([...running].map((p) => p.stop()));
  await tpm?.stop();
  for (const i of images.values()) i.box.dispose();
  rmSync(work, { recursive: true, force: true });
});

const image = (arch: Arch): Image => {
  const i = images.get(arch);
  if (!i) throw new Error(`the ${arch} tree was not assembled`);
  return i;
};

/** Every entry under `dir` that is not a directory, as absolute paths inside it, with its lstat. */
function files(dir: string): Map<string, Stats> {
  const out = new Map<string, Stats>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else out.set(p, lstatSync(join(dir, p)));
    }
  };
  walk("");
  return out;
}

const sha256 = (path: string) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");

/** The layer as scripts/image-contents.ts names it: each soname link, the file it names, and the executable. */
function expectedLayer(arch: Arch, layerTree: string): Set<string> {
  const dir = `/usr/lib/${ARCHES[arch].triplet}`;
  const out = new Set<string>([LAYER.executable]);
  for (const sonames of Object.values(LAYER.libraries)) {
    for (const soname of sonames) {
      const link = `${dir}/${soname}`;
      out.add(link);
      out.add(join(dir, readlinkSync(join(layerTree, link))));
    }
  }
  return out;
}

/** Start the executable inside the tree as the image's entrypoint; resolves once it listens. */
async function serveIn(arch: Arch, args: string[]): Promise<{ p: CliProcess; url: string }> {
  const p = runCli(["-port", ":0", ...args], { command: image(arch).box.command([LAYER.executable]), env: CONTAINER_ENV, cwd: work });
  running.add(p);
  try {
    return { p, url: await listeningUrl(p) };
  } catch (e) {
    await p.stop();
    running.delete(p);
    throw e;
  }
}

async function stop(p: CliProcess): Promise<number> {
  const code = await p.stop();
  running.delete(p);
  return code;
}

const get = (url: string, path: string) => fetch(url + path, { headers: { "Metadata-Flavor": "Google" } });

/** The mounts the process sees, by mount point inside its root: filesystem type and mount options. */
function mountsOf(pid: number): Map<string, { type: string; options: string[] }> {
  const out = new Map<string, { type: string; options: string[] }>();
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, "utf8").trim().split("\n")) {
    const [left, right] = line.split(" - ");
    const f = left!.split(" ");
    const [type, , superOptions] = right!.split(" ");
    out.set(f[4]!, { type: type!, options: [...f[5]!.split(","), ...superOptions!.split(",")] });
  }
  return out;
}

for (const arch of ARCH_LIST) {
  describe(`${arch}${arch === "arm64" ? " (under qemu-user)" : ""}`, () => {
    test("`npm run rootfs` lays out the distroless base and the Dockerfile's layer, and reports the tree it made", () => {
      const { tree, layerTree, report } = image(arch);
      const all = files(tree);
      let bytes = 0;
      for (const st of all.values()) if (st.isFile()) bytes += st.size;
      expect(report.files).toBe(all.size);
      expect(report.mb).toBe((bytes / 1e6).toFixed(1));

      // The base as distroless documents it.
      expect(readFileSync(join(tree, "etc/passwd"), "utf8")).toContain(
        `nonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n`,
      );
      expect(readFileSync(join(tree, "etc/group"), "utf8")).toContain(`nonroot:x:${NONROOT}:\n`);
      const home = lstatSync(join(tree, "home/nonroot"));
      expect([home.uid, home.mode & 0o7777]).toEqual([NONROOT, 0o700]);
      expect(lstatSync(join(tree, "tmp")).mode & 0o7777).toBe(0o1777);
      const bundle = readFileSync(join(tree, "etc/ssl/certs/ca-certificates.crt"), "utf8");
      expect(bundle.match(/-----BEGIN CERTIFICATE-----/g)!.length).toBeGreaterThan(100);
      for (const f of [ARCHES[arch].loader, "/usr/share/zoneinfo/UTC", "/etc/services", "/etc/nsswitch.conf"])
        expect(all.has(f)).toBe(true);
      const libs = [...all.keys()].map((p) => p.split("/").pop()!);
      for (const soname of ["libc.so.6", "libssl.so.3", "libcrypto.so.3", "libstdc++.so.6", "libgcc_s.so.1", "libgomp.so.1"])
        expect(libs).toContain(soname);

      // The layer: exactly what scripts/image-contents.ts lists, the same files in the whole tree.
      const layer = files(layerTree);
      const expected = expectedLayer(arch, layerTree);
      expect([...layer.keys()].sort()).toEqual([...expected].sort());
      for (const [p, st] of layer) {
        const inTree = all.get(p);
        expect(inTree?.isSymbolicLink()).toBe(st.isSymbolicLink());
        if (st.isSymbolicLink()) expect(readlinkSync(join(tree, p))).toBe(readlinkSync(join(layerTree, p)));
        else expect(sha256(join(tree, p))).toBe(sha256(join(layerTree, p)));
      }
      // The base holds none of it: no tpm2-tss library and nothing in /usr/local.
      const baseOnly = [...all.keys()].filter((p) => !expected.has(p));
      expect(baseOnly.filter((p) => p.includes("libtss2") || p.startsWith("/usr/local/"))).toEqual([]);
      expect(all.size).toBe(baseOnly.length + expected.size);
    });

    test("the tree's own loader finds every library inside the tree; the layer beyond the base is exactly the tpm2-tss closure", async () => {
      const { tree, layerTree, box } = image(arch);
      const loader = ARCHES[arch].loader;
      const triplet = ARCHES[arch].triplet;
      const layer = expectedLayer(arch, layerTree);
      const list = async (path: string) => {
        const r = await box.run([loader, "--list", path]);
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        const deps = parseLdList(r.stdout);
        expect(deps.filter((d) => d.path === undefined)).toEqual([]);
        for (const d of deps) expect(lstatSync(join(tree, d.path!), { throwIfNoEntry: false })).toBeDefined();
        return deps.map((d) => d.path!);
      };

      // The executable needs only the base (glibc): the TPM libraries are opened when -tpm asks for them.
      const exeDeps = await list(LAYER.executable);
      expect(exeDeps.map((p) => p.split("/").pop()).sort()).toEqual(
        ["libc.so.6", "libdl.so.2", "libm.so.6", "libpthread.so.0", loader.split("/").pop()!].sort(),
      );
      expect(exeDeps.filter((p) => layer.has(p))).toEqual([]);

      // The libraries the program and the TCTI loader open, with their dependencies.
      const closure = new Set<string>();
      for (const entry of LAYER.entryPoints) {
        const path = `/usr/lib/${triplet}/${entry}`;
        closure.add(path);
        for (const d of await list(path)) closure.add(d);
      }
      const inLayer = [...closure].filter((p) => layer.has(p)).sort();
      const sonamePaths = Object.values(LAYER.libraries)
        .flat()
        .map((s) => `/usr/lib/${triplet}/${s}`)
        .sort();
      expect(inLayer).toEqual(sonamePaths);
      // Everything else they need is the base's: glibc and libcrypto.
      const fromBase = [...closure].filter((p) => !layer.has(p)).map((p) => p.split("/").pop()!);
      expect(fromBase).toContain("libcrypto.so.3");
      expect(fromBase).toContain("libc.so.6");
      expect(fromBase.filter((n) => n.includes("tss2"))).toEqual([]);
    });

    test("serves the bundled config as uid 65532 on a read-only view with /proc and /dev; mints an access token and a verifiable ID token; healthcheck exits 0", async () => {
      const { p, url } = await serveIn(arch, []);
      const log = p.stderr();
      expect(log).toContain("no config.json here: serving the bundled default config (project example-project)");
      expect(log).toContain("version=9.8.7-dist");
      expect(log).not.toContain("ERROR");

      // What the process sees: the image's user, a read-only root, and the mounts a runtime makes.
      const pid = p.proc.pid;
      expect(readFileSync(`/proc/${pid}/status`, "utf8")).toMatch(
        new RegExp(`\\nUid:\\t${NONROOT}\\t${NONROOT}\\t${NONROOT}\\t${NONROOT}\\n`),
      );
      const mounts = mountsOf(pid);
      expect(mounts.get("/")?.type).toBe("overlay");
      expect(mounts.get("/")?.options).toContain("ro");
      expect(mounts.get("/proc")?.type).toBe("proc");
      expect(mounts.get("/dev")?.type).toBe("tmpfs");
      expect(mounts.get("/sys")?.options).toContain("ro");
      expect(readlinkSync(`/proc/${pid}/root`)).not.toBe(image(arch).tree);

      expect(await (await get(url, "/computeMetadata/v1/project/project-id")).text()).toBe("example-project");
      const res = await get(url, TOKEN);
      expect(res.status).toBe(200);
      const tok = (await res.json()) as { access_token: string; expires_in: number; token_type: string };
      expect(tok.access_token).toMatch(/^ya29\.[\w-]{100,}$/);
      expect(tok.token_type).toBe("Bearer");
      expect(tok.expires_in).toBeGreaterThan(3500);

      const audience = `https://rootfs-${arch}.example.com`;
      const id = await get(url, `/computeMetadata/v1/instance/service-accounts/default/identity?audience=${audience}&format=full`);
      expect(id.status).toBe(200);
      const { payload } = await jwtVerify(await id.text(), createRemoteJWKSet(new URL(`${url}/oauth2/v3/certs`)), {
        audience,
        issuer: "https://accounts.google.com",
      });
      expect(payload.email).toBe(EMAIL);

      const healthy = await image(arch).box.run([LAYER.executable, "healthcheck", "-url", url]);
      expect(healthy).toEqual({ code: 0, stdout: "healthy\n", stderr: "" });
      expect(await stop(p)).toBe(0);
      const gone = await image(arch).box.run([LAYER.executable, "healthcheck", "-url", url]);
      expect(gone.code).toBe(1);
      expect(gone.stderr).toStartWith(`unhealthy: ${url}/computeMetadata/v1/project/project-id: `);
    }, 60_000);

    test("-tpm with a swtpm on the host's loopback: the tree's tpm2-tss libraries sign a token that verifies with the key's public half", async () => {
      const { p, url } = await serveIn(arch, ["-tpm", "-tpm-path", tpm!.path, "-persistentHandle", HANDLE]);
      try {
        expect(p.stderr()).toContain("using a TPM key for credentials");
        const res = await get(url, TOKEN);
        expect(res.status).toBe(200);
        const tok = (await res.json()) as { access_token: string; expires_in: number };
        const { payload, protectedHeader } = await jwtVerify(tok.access_token, key.publicKey, { algorithms: ["RS256"] });
        expect(protectedHeader).toEqual({ alg: "RS256", typ: "JWT" });
        expect(payload).toMatchObject({ iss: EMAIL, sub: EMAIL, scope: "https://www.googleapis.com/auth/cloud-platform" });
        expect(payload.exp! - payload.iat!).toBe(3600);
      } finally {
        expect(await stop(p)).toBe(0);
      }
      // A clean shutdown left nothing loaded in the TPM.
      expect(tools.transientHandles()).toEqual([]);
    }, 60_000);
  });
}

test("the two trees are the two platforms: each executable is an ELF for its machine", async () => {
  const machine = async (arch: Arch) => {
    const b = Buffer.from(
      await Bun.file(join(image(arch).tree, LAYER.executable))
        .slice(0, 20)
        .arrayBuffer(),
    );
    expect(b.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
    return b.readUInt16LE(18);
  };
  expect(await machine("x64")).toBe(62); // EM_X86_64
  expect(await machine("arm64")).toBe(183); // EM_AARCH64
});

test("the layer's entry points include every library the program opens (src/tpm/ffi.ts), from the same packages", async () => {
  const ffi = await Bun.file(join(ROOT, "src/tpm/ffi.ts")).text();
  const opened = [...ffi.matchAll(/^ {2}"(libtss2-[\w.-]+\.so\.\d+)": "([\w.-]+)",$/gm)].map((m) => [m[1]!, m[2]!] as const);
  expect(opened.map(([soname]) => soname).sort()).toEqual([
    "libtss2-esys.so.0",
    "libtss2-mu.so.0",
    "libtss2-rc.so.0",
    "libtss2-tctildr.so.0",
  ]);
  const entryPoints: readonly string[] = LAYER.entryPoints;
  for (const [soname, pkg] of opened) {
    expect(entryPoints).toContain(soname);
    expect(LAYER.libraries[pkg]).toContain(soname);
  }
  // The TCTI loader's modules for a device path, "host:port" (swtpm) and mssim: configs src/tpm/tcti.ts passes.
  for (const t of ["device", "swtpm", "mssim"]) expect(entryPoints).toContain(`libtss2-tcti-${t}.so.0`);
});
