/**
 * The host executable as `npm run build` makes it (scripts/build.ts, test version facts), built once and shared by
 * the distribution tests. It is kept in .tmp/test-dist-build/ with a hash of every build input beside it, so a
 * rerun with unchanged sources skips the compile (about 3 s here).
 */
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { compile, versionDefines, type VersionFacts } from "../../scripts/build.ts";

const ROOT = join(import.meta.dir, "../..");
const OUT = join(ROOT, ".tmp", "test-dist-build");
export const TEST_FACTS: VersionFacts = { version: "9.8.7-dist", date: "2001-02-03T04:05:06.000Z", commit: "0123456789ab" };

async function inputsHash(): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  h.update(JSON.stringify(TEST_FACTS));
  h.update(Bun.version);
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else files.push(p);
    }
  };
  walk(join(ROOT, "src"));
  files.push(...["package.json", "package-lock.json", "config.json", "scripts/build.ts"].map((f) => join(ROOT, f)));
  for (const f of files.sort()) {
    h.update(relative(ROOT, f));
    h.update(await Bun.file(f).arrayBuffer());
  }
  return h.digest("hex");
}

const pending = new Map<string, Promise<string>>();
const HOST = process.arch === "arm64" ? "arm64" : "x64";

/**
 * Path of the executable for a Linux architecture (default this machine's), built on first call in a process or
 * reused from an earlier run. Another architecture is cross-compiled (Bun fetches that runtime once).
 */
export function executableFor(arch: "x64" | "arm64" = HOST): Promise<string> {
  let p = pending.get(arch);
  if (!p) {
    p = (async () => {
      const exe = join(OUT, arch === HOST ? "gce_metadata_server" : `gce_metadata_server-linux-${arch}`);
      const hash = await inputsHash();
      const stamp = Bun.file(`${exe}.inputs.sha256`);
      if ((await stamp.exists()) && (await stamp.text()) === hash && (await Bun.file(exe).exists())) return exe;
      await Bun.write(stamp, "");
      const target = arch === HOST ? {} : { target: `bun-linux-${arch}` };
      await compile({ outfile: exe, defines: versionDefines(TEST_FACTS), quiet: true, ...target });
      await Bun.write(stamp, hash);
      return exe;
    })();
    pending.set(arch, p);
  }
  return p;
}

/** The executable for this machine. */
export const hostExecutable = (): Promise<string> => executableFor();
