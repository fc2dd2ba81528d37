/**
 * deploy/kubernetes: every manifest validates offline against the Kubernetes schemas (kubernetes-models), the keys
 * the README promises are there, and two replicas run with the Deployment's own container arguments against
 * volumes laid out as the kubelet lays out ConfigMap and Secret volumes (`..data` swapped atomically on update).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service } from "kubernetes-models/v1/Service";
import { LAYER, NONROOT } from "../../scripts/image-contents.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { listeningUrl, runCli, type CliProcess } from "../helpers/cli.ts";
import { hostExecutable } from "../helpers/executable.ts";

const DIR = join(import.meta.dir, "../../deploy/kubernetes");
const work = mkdtempSync(join(tmpdir(), "gce-k8s-"));

type Manifest = Record<string, any>;
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  "v1/ConfigMap": ConfigMap,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
};

/** Every document of every manifest file, by file name. */
const manifests = new Map<string, Manifest[]>();
for (const f of readdirSync(DIR).sort()) {
  if (!f.endsWith(".yaml")) continue;
  const text = await Bun.file(join(DIR, f)).text();
  const parsed = Bun.YAML.parse(text) as Manifest | Manifest[];
  manifests.set(f, /^---$/m.test(text) ? (parsed as Manifest[]) : [parsed as Manifest]);
}
const one = (file: string, kind: string): Manifest => {
  const docs = (manifests.get(file) ?? []).filter((d) => d.kind === kind);
  if (docs.length !== 1) throw new Error(`${file} should hold one ${kind}, holds ${docs.length}`);
  return docs[0]!;
};

const configMap = one("configmap.yaml", "ConfigMap");
const deployment = one("deployment.yaml", "Deployment");
const service = one("deployment.yaml", "Service");
const networkPolicy = one("networkpolicy.yaml", "NetworkPolicy");
const sidecar = one("sidecar.yaml", "Deployment");
const server = deployment.spec.template.spec.containers[0] as Manifest;

/** The value after `flag` in an argument list. */
function argValue(args: string[], flag: string): string {
  const i = args.indexOf(flag);
  if (i < 0 || i + 1 >= args.length) throw new Error(`no ${flag} in ${args.join(" ")}`);
  return args[i + 1]!;
}

describe("manifests", () => {
  test("every document validates against the Kubernetes schemas; the validator rejects a wrong type", () => {
    const kinds: string[] = [];
    for (const [file, docs] of manifests) {
      for (const doc of docs) {
        const key = `${doc.apiVersion}/${doc.kind}`;
        kinds.push(`${file}: ${key}`);
        const Model = MODELS[key];
        if (!Model) throw new Error(`${file}: no schema for ${key}`);
        expect(() => new Model(doc).validate()).not.toThrow();
        expect(doc.metadata.labels["app.kubernetes.io/name"]).toBeString();
      }
    }
    expect(kinds).toEqual([
      "configmap.yaml: v1/ConfigMap",
      "deployment.yaml: apps/v1/Deployment",
      "deployment.yaml: v1/Service",
      "networkpolicy.yaml: networking.k8s.io/v1/NetworkPolicy",
      "sidecar.yaml: apps/v1/Deployment",
    ]);
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0].ports[0].containerPort = "8080";
    expect(() => new Deployment(broken).validate()).toThrow("containerPort must be integer");
  });

  test("the ConfigMap is mounted as a directory (no subPath) holding the -configFile; the Secret holds -issuerKey", () => {
    const args = server.args as string[];
    expect(() => parseFlags(args)).not.toThrow();
    const volumes = deployment.spec.template.spec.volumes as Manifest[];
    const mounts = server.volumeMounts as Manifest[];
    for (const m of mounts) expect(m.subPath).toBeUndefined();
    const config = volumes.find((v) => v.configMap)!;
    expect(config.configMap.name).toBe(configMap.metadata.name);
    const configMount = mounts.find((m) => m.name === config.name)!;
    expect(argValue(args, "-configFile")).toBe(`${configMount.mountPath}/config.json`);
    expect(Object.keys(configMap.data)).toEqual(["config.json"]);
    const key = volumes.find((v) => v.secret)!;
    const keyMount = mounts.find((m) => m.name === key.name)!;
    expect(argValue(args, "-issuerKey")).toStartWith(`${keyMount.mountPath}/`);
    expect(key.secret.defaultMode).toBe(0o440);
    expect(deployment.spec.template.spec.securityContext.fsGroup).toBe(NONROOT);
  });

  test("probes: readiness on /readyz and liveness on /healthz at the metrics listener the arguments turn on", () => {
    const args = server.args as string[];
    expect(args).toContain("-metricsEnabled");
    const ports = Object.fromEntries((server.ports as Manifest[]).map((p) => [p.name, p.containerPort]));
    expect(ports).toEqual({ http: Number(argValue(args, "-port").slice(1)), metrics: Number(argValue(args, "-metricsPort")) });
    expect(argValue(args, "-interface")).toBe("0.0.0.0");
    expect(argValue(args, "-metricsInterface")).toBe("0.0.0.0");
    expect(server.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "metrics" });
    expect(server.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "metrics" });
  });

  test("non-root, read-only root filesystem, no capabilities, resource requests", () => {
    for (const [pod, container] of [
      [deployment.spec.template.spec, server],
      [sidecar.spec.template.spec, sidecar.spec.template.spec.initContainers[0]],
    ] as Manifest[][]) {
      expect(pod!.securityContext.runAsNonRoot).toBe(true);
      expect(pod!.securityContext.runAsUser ?? container!.securityContext.runAsUser).toBe(NONROOT);
      expect(pod!.automountServiceAccountToken).toBe(false);
      expect(container!.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
      });
      expect(container!.resources.requests.cpu).toMatch(/^\d+m$/);
      expect(container!.resources.requests.memory).toMatch(/^\d+Mi$/);
    }
  });

  test("the Service selects the pods and names their ports; the NetworkPolicy covers those pods and admits only labelled clients", () => {
    const podLabels = deployment.spec.template.metadata.labels;
    expect(deployment.spec.selector.matchLabels).toEqual(podLabels);
    expect(service.spec.selector).toEqual(podLabels);
    const named = (server.ports as Manifest[]).map((p) => p.name);
    for (const p of service.spec.ports as Manifest[]) expect(named).toContain(p.targetPort);
    expect(networkPolicy.spec.podSelector).toEqual({ matchLabels: podLabels });
    expect(networkPolicy.spec.policyTypes).toEqual(["Ingress"]);
    expect(networkPolicy.spec.ingress).toEqual([
      {
        from: [{ podSelector: { matchLabels: { "gce-metadata-client": "true" } } }],
        ports: (server.ports as Manifest[]).map((p) => ({ protocol: "TCP", port: p.containerPort })),
      },
    ]);
  });

  test("sidecar: a native sidecar on the pod's loopback, probed by the healthcheck command, with the app's environment set", () => {
    const spec = sidecar.spec.template.spec;
    const side = spec.initContainers[0] as Manifest;
    expect(side.restartPolicy).toBe("Always");
    const flags = parseFlags(side.args);
    expect(flags.interface).toBe("127.0.0.1");
    const host = `127.0.0.1${flags.port}`;
    const probe = [LAYER.executable, "healthcheck", "-url", `http://${host}`];
    expect(side.startupProbe.exec.command).toEqual(probe);
    expect(side.livenessProbe.exec.command).toEqual(probe);
    const volume = (spec.volumes as Manifest[]).find((v) => v.configMap)!;
    expect(volume.configMap.name).toBe(configMap.metadata.name);
    const mount = (side.volumeMounts as Manifest[]).find((m) => m.name === volume.name)!;
    expect(mount.subPath).toBeUndefined();
    expect(flags.configFile).toBe(`${mount.mountPath}/config.json`);
    const env = Object.fromEntries((spec.containers[0].env as Manifest[]).map((e) => [e.name, e.value]));
    expect(env).toEqual({ GCE_METADATA_HOST: host, GCE_METADATA_IP: host, GCE_METADATA_ROOT: host });
  });
});

/** A volume as the kubelet writes ConfigMaps and Secrets: files behind `..data`, swapped by one rename. */
class KubeletVolume {
  private generation = 0;
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  write(data: Record<string, string>): void {
    const old = this.generation > 0 ? `..gen_${this.generation}` : undefined;
    const gen = `..gen_${++this.generation}`;
    mkdirSync(join(this.dir, gen));
    for (const [k, v] of Object.entries(data)) writeFileSync(join(this.dir, gen, k), v, { mode: 0o644 });
    symlinkSync(gen, join(this.dir, "..data_tmp"));
    renameSync(join(this.dir, "..data_tmp"), join(this.dir, "..data"));
    for (const k of Object.keys(data)) {
      try {
        symlinkSync(join("..data", k), join(this.dir, k));
      } catch {
        // already linked in an earlier generation
      }
    }
    if (old) rmSync(join(this.dir, old), { recursive: true, force: true });
  }
}

describe("two replicas with the Deployment's arguments", () => {
  const replicas: Array<{ p: CliProcess; url: string; metrics: string }> = [];
  let config: KubeletVolume;
  const original = JSON.parse(configMap.data["config.json"]);

  beforeAll(async () => {
    const exe = await hostExecutable();
    config = new KubeletVolume(join(work, "config"));
    config.write(configMap.data);
    const key = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    new KubeletVolume(join(work, "issuer-key")).write({ "issuer-key.pem": key });
    // The mounts become these directories; listeners stay on loopback (free ports) instead of the pod's 0.0.0.0.
    const where: Record<string, string> = { config: join(work, "config"), "issuer-key": join(work, "issuer-key") };
    const mounts = (server.volumeMounts as Manifest[]).map((m) => [m.mountPath as string, where[m.name]!] as const);
    const replace: Record<string, string> = {
      "-interface": "127.0.0.1",
      "-metricsInterface": "127.0.0.1",
      "-port": ":0",
      "-metricsPort": "0",
    };
    const args = (server.args as string[]).map((a, i, all) => {
      const prev = all[i - 1]!;
      if (prev in replace) return replace[prev]!;
      for (const [from, to] of mounts) if (a.startsWith(`${from}/`)) return to + a.slice(from.length);
      return a;
    });
    expect(args).toContain(join(work, "issuer-key", "issuer-key.pem"));
    mkdirSync(join(work, "cwd"));
    for (let i = 0; i < deployment.spec.replicas; i++) {
      const p = runCli(args, { command: [exe], cwd: join(work, "cwd") });
      replicas.push({ p, url: "", metrics: "" });
      replicas[i]!.url = await listeningUrl(p);
      // The metrics listener's base URL (its log line names /metrics and /healthz on it).
      replicas[i]!.metrics = (await p.waitFor(/metrics listening .*health=(\S+)\/healthz/))[1]!;
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.p.stop()));
    rmSync(work, { recursive: true, force: true });
  });

  const get = (url: string, path: string) => fetch(url + path, { headers: { "Metadata-Flavor": "Google" } });

  test("both are ready and live on the probes' paths and serve the ConfigMap's config", async () => {
    expect(replicas).toHaveLength(2);
    for (const r of replicas) {
      expect((await fetch(`${r.metrics}/readyz`)).status).toBe(200);
      expect((await fetch(`${r.metrics}/healthz`)).status).toBe(200);
      expect(await (await get(r.url, "/computeMetadata/v1/project/project-id")).text()).toBe(original.computeMetadata.v1.project.projectId);
      expect(r.p.stderr()).not.toContain("ERROR");
    }
  });

  test("their ETags and JWKS agree: an ID token from one verifies against the other's keys", async () => {
    const [a, b] = replicas;
    for (const path of [
      "/computeMetadata/v1/instance/?recursive=true",
      "/computeMetadata/v1/project/project-id",
      "/computeMetadata/v1/instance/service-accounts/default/email",
    ]) {
      const [ra, rb] = await Promise.all([get(a!.url, path), get(b!.url, path)]);
      expect(ra.status).toBe(200);
      expect(ra.headers.get("etag")).toMatch(/^[0-9a-f]{16}$/);
      expect(rb.headers.get("etag")).toBe(ra.headers.get("etag")!);
      expect(await rb.text()).toBe(await ra.text());
    }
    const [ja, jb] = await Promise.all([fetch(`${a!.url}/oauth2/v3/certs`), fetch(`${b!.url}/oauth2/v3/certs`)]);
    const keys = await ja.text();
    expect(JSON.parse(keys).keys).toHaveLength(1);
    expect(await jb.text()).toBe(keys);
    const audience = "https://replicas.example.com";
    const id = await (
      await get(a!.url, `/computeMetadata/v1/instance/service-accounts/default/identity?audience=${audience}&format=full`)
    ).text();
    const { payload } = await jwtVerify(id, createRemoteJWKSet(new URL(`${b!.url}/oauth2/v3/certs`)), { audience });
    expect(payload.email).toBe(original.computeMetadata.v1.instance.serviceAccounts.default.email);
  });

  test("a ConfigMap update (`..data` swapped) is served live by both: waiters wake with the same new value and ETag", async () => {
    const path = "/computeMetadata/v1/project/attributes/?recursive=true";
    const before = await get(replicas[0]!.url, path);
    const etag = before.headers.get("etag")!;
    expect(await before.json()).toEqual({});
    const waits = replicas.map((r) => get(r.url, `${path}&wait_for_change=true&last_etag=${etag}&timeout_sec=25`));
    await Bun.sleep(200);
    const updated = structuredClone(original);
    updated.computeMetadata.v1.project.attributes = { rollout: "2" };
    config.write({ "config.json": JSON.stringify(updated, null, 2) });
    const answers = await Promise.all(waits);
    const etags = answers.map((r) => r.headers.get("etag"));
    expect(etags[0]).not.toBe(etag);
    expect(etags[1]).toBe(etags[0]!);
    for (const r of answers) expect(await r.json()).toEqual({ rollout: "2" });
    for (const r of replicas) {
      expect(await (await get(r.url, "/computeMetadata/v1/project/attributes/rollout")).text()).toBe("2");
      expect(r.p.stderr()).toContain(`config reloaded file=${join(work, "config", "config.json")}`);
    }
  }, 40_000);
});
