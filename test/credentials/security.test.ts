/**
 * Regression tests for the credential-side findings of the security audit (issue 15): e-mails in IAM URLs (2),
 * scopes and accounts a token may be had for (5), the issuer key file (6), the ID-token cache's bounds (7), and
 * per-scope client maps (8). Each failed before its fix.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readAdcFile } from "../../src/credentials/adc.ts";
import { BoundedMap } from "../../src/credentials/bounded.ts";
import { EmulatedIssuer } from "../../src/credentials/emulated.ts";
import { FederatedSource } from "../../src/credentials/federated.ts";
import { IamCredentials } from "../../src/credentials/iam.ts";
import { readServiceAccountKey, ServiceAccountKeySource } from "../../src/credentials/service-account.ts";
import { MAX_AUDIENCE_LENGTH } from "../../src/credentials/token-cache.ts";
import { ConfigError, CredentialError } from "../../src/errors.ts";
import { DEFAULT_CONFIG_TEXT, MetadataServer } from "../../src/index.ts";
import { type FakeGoogle, makeServiceAccountKey, makeExternalAccount, startFakeGoogle } from "../fakes/google.ts";
import { startServer, type Started, V1 } from "../helpers/server.ts";

const CLOUD = "https://www.googleapis.com/auth/cloud-platform";
const STORAGE_RO = "https://www.googleapis.com/auth/devstorage.read_only";
const DEFAULT_EMAIL = "123456789012-compute@developer.gserviceaccount.com";
const dir = mkdtempSync(join(tmpdir(), "security-"));

let fake: FakeGoogle;
beforeAll(async () => {
  fake = await startFakeGoogle();
});
afterAll(async () => {
  await fake.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The bundled config with these service accounts. */
function withAccounts(accounts: Record<string, { email: string; scopes: string[] }>): object {
  const doc = JSON.parse(DEFAULT_CONFIG_TEXT);
  doc.computeMetadata.v1.instance.serviceAccounts = Object.fromEntries(
    Object.entries(accounts).map(([k, a]) => [k, { aliases: k === "default" ? ["default"] : [], ...a }]),
  );
  return doc;
}

describe("2: e-mails in IAM URLs", () => {
  test("the e-mail is one percent-encoded path segment: no address changes the path the bearer goes to", () => {
    const iam = new IamCredentials({ url: "https://iamcredentials.googleapis.com" });
    expect(iam.methodUrl("app@p.iam.gserviceaccount.com", "generateAccessToken")).toBe(
      "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/app@p.iam.gserviceaccount.com:generateAccessToken",
    );
    expect(iam.methodUrl("x/../../v2/evil?", "generateIdToken")).toBe(
      "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x%2F..%2F..%2Fv2%2Fevil%3F:generateIdToken",
    );
  });

  test("the request really goes to that path", async () => {
    const paths: string[] = [];
    const iam = new IamCredentials({
      url: "http://iam.test",
      fetch: async (url) => {
        paths.push(url);
        return Response.json({ accessToken: "ya29.x", expireTime: new Date(Date.now() + 3600_000).toISOString() });
      },
    });
    await iam.generateAccessToken("bearer", "a:b#c@d", [CLOUD], 3600);
    expect(paths).toEqual(["http://iam.test/v1/projects/-/serviceAccounts/a%3Ab%23c@d:generateAccessToken"]);
  });

  test("a config with such an e-mail is refused, naming the path and what an address may hold", () => {
    const doc = withAccounts({ default: { email: "x/../../v2/evil?@p", scopes: [CLOUD] } });
    expect(() => new MetadataServer({ claims: doc })).toThrow(ConfigError);
    expect(() => new MetadataServer({ claims: doc })).toThrow(
      'computeMetadata.v1.instance.serviceAccounts.default.email: "x/../../v2/evil?@p" is not a service account e-mail address: the part before @ may hold only letters',
    );
    expect(() => new MetadataServer({ claims: withAccounts({ default: { email: "a@b@c", scopes: [] } }) })).toThrow(
      "not of the form name@domain",
    );
    expect(() => new MetadataServer({ env: { GOOGLE_SERVICE_ACCOUNT: "evil?@x" } })).toThrow(
      'GOOGLE_SERVICE_ACCOUNT: "evil?@x" is not a service account e-mail address',
    );
  });

  test("an edit (library or control API) goes through the same check", async () => {
    const server = new MetadataServer({ controlApi: true, serverConfig: { port: 0 } });
    const { url } = await server.start();
    try {
      expect(() => server.set("instance/service-accounts/default/email", "x/../evil")).toThrow("is not a service account e-mail address");
      expect(() => server.merge("instance/service-accounts", { "new@p.iam.gserviceaccount.com": { email: "a b@c" } })).toThrow(
        "is not a service account e-mail address",
      );
      const res = await fetch(`${url}/emulator/v1/metadata/instance/service-accounts/default/email`, {
        method: "PUT",
        headers: { "Metadata-Flavor": "Google" },
        body: JSON.stringify("x/../../v2/evil?@p"),
      });
      expect(res.status).toBe(400);
      expect(await res.text()).toContain("is not a service account e-mail address");
      expect(server.get("instance/service-accounts/default/email")).toBe(DEFAULT_EMAIL);
    } finally {
      await server.stop();
    }
  });
});

describe("5: scopes and accounts", () => {
  let s: Started;
  beforeAll(async () => {
    s = await startServer({
      claims: withAccounts({
        default: { email: DEFAULT_EMAIL, scopes: [CLOUD] },
        "ro@p.iam.gserviceaccount.com": { email: "ro@p.iam.gserviceaccount.com", scopes: [STORAGE_RO] },
      }),
    });
  });
  afterAll(() => s.stop());

  test("an account without cloud-platform gets only its own scopes; another scope is a 403 saying which", async () => {
    const ro = `${V1}instance/service-accounts/ro@p.iam.gserviceaccount.com/token`;
    expect((await s.get(ro)).status).toBe(200);
    expect((await s.get(`${ro}?scopes=${STORAGE_RO}`)).status).toBe(200);
    const refused = await s.get(`${ro}?scopes=${CLOUD}`);
    expect(refused.status).toBe(403);
    expect(await refused.text()).toBe(
      `ro@p.iam.gserviceaccount.com does not hold the scope ${CLOUD} (it holds ${STORAGE_RO}); ask for those, or give the account the scope in the config\n`,
    );
    expect((await s.get(`${ro}?scopes=${STORAGE_RO},https://www.googleapis.com/auth/bigquery`)).status).toBe(403);
  });

  test("cloud-platform covers every scope", async () => {
    const res = await s.get(`${V1}instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/bigquery,${STORAGE_RO}`);
    expect(res.status).toBe(200);
  });

  test("key mode: tokens for the key's account and the default one; other accounts are 404", async () => {
    const key = await makeServiceAccountKey(fake, { email: "keyed@p.iam.gserviceaccount.com", projectId: "p" });
    const k = await startServer({
      credentials: new ServiceAccountKeySource(await readServiceAccountKey(key.path)),
      claims: withAccounts({
        default: { email: DEFAULT_EMAIL, scopes: [CLOUD] },
        "keyed@p.iam.gserviceaccount.com": { email: "keyed@p.iam.gserviceaccount.com", scopes: [CLOUD] },
        "other@p.iam.gserviceaccount.com": { email: "other@p.iam.gserviceaccount.com", scopes: [CLOUD] },
      }),
    });
    try {
      const sa = `${V1}instance/service-accounts/`;
      for (const who of ["default", DEFAULT_EMAIL, "keyed@p.iam.gserviceaccount.com"]) {
        const res = await k.get(`${sa}${who}/token`);
        expect(res.status).toBe(200);
        expect(fake.tokenInfo(((await res.json()) as { access_token: string }).access_token)?.email).toBe(
          "keyed@p.iam.gserviceaccount.com",
        );
      }
      const calls = fake.calls.token;
      for (const path of ["other@p.iam.gserviceaccount.com/token", "other@p.iam.gserviceaccount.com/identity?audience=x"]) {
        const res = await k.get(`${sa}${path}`);
        expect(res.status).toBe(404);
        await res.text();
      }
      expect(fake.calls.token).toBe(calls);
      // The account's own metadata is still served.
      expect(await (await k.get(`${sa}other@p.iam.gserviceaccount.com/email`)).text()).toBe("other@p.iam.gserviceaccount.com");
    } finally {
      await k.stop();
    }
  });
});

describe("6: the issuer key file", () => {
  const jwks = (file: string) => new EmulatedIssuer({ keyFile: file }).openid.jwks();

  test("created with mode 0600 in one step; used again on the next start", async () => {
    const file = join(dir, "new.pem");
    const first = await jwks(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, "utf8")).toStartWith("-----BEGIN PRIVATE KEY-----");
    expect(await jwks(file)).toEqual(first);
  });

  test("a symlink planted at the path is not followed: nothing is written through it", async () => {
    const target = join(dir, "victim");
    const link = join(dir, "planted.pem");
    symlinkSync(target, link); // dangling: creating through it would make `victim`
    const e = await jwks(link).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CredentialError);
    expect((e as Error).message).toContain("a symbolic link points nowhere at the issuer key's path");
    expect(existsSync(target)).toBe(false);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
  });

  test("an existing key writable by group or others is refused, saying how to fix it", async () => {
    const good = join(dir, "good.pem");
    await jwks(good);
    for (const [mode, who] of [
      [0o666, "others"],
      [0o620, "its group"],
    ] as const) {
      const file = join(dir, `loose-${mode.toString(8)}.pem`);
      writeFileSync(file, readFileSync(good));
      chmodSync(file, mode);
      const e = (await jwks(file).catch((x: unknown) => x)) as CredentialError;
      expect(e.code).toBe("ISSUER_KEY_UNSAFE");
      expect(e.message).toBe(
        `${file}: the issuer key is writable by ${who} (mode 0${mode.toString(8)}); anyone who can write it chooses the key ID tokens are signed with. Run chmod 600 ${file}, or delete it to have a new one made`,
      );
    }
    chmodSync(good, 0o644); // readable by others is the operator's choice; writable is not
    expect((await jwks(good)).keys).toHaveLength(1);
  });

  test("an existing key owned by another user is refused", async () => {
    const uid = process.getuid!();
    const file = join(dir, "theirs.pem");
    await jwks(file);
    const other = uid === 0 ? 1000 : uid;
    if (uid === 0) chownSync(file, other, other);
    const e = (await jwks(file).catch((x: unknown) => x)) as CredentialError;
    // Only root can give a file away; as another user the file stays ours and is accepted.
    if (uid === 0) {
      expect(e.code).toBe("ISSUER_KEY_UNSAFE");
      expect(e.message).toStartWith(`${file}: the issuer key belongs to user ${other}, not to this user (0)`);
      expect(e.message).toContain(`chown 0 ${file}`);
    } else {
      expect(e).not.toBeInstanceOf(Error);
    }
  });
});

describe("7: ID-token audiences and the cache's bounds", () => {
  test(`an audience longer than ${MAX_AUDIENCE_LENGTH} characters is a 400; at the limit it is served`, async () => {
    const s = await startServer();
    try {
      const at = (n: number) => `${V1}instance/service-accounts/default/identity?audience=https://${"a".repeat(n - 8)}`;
      expect((await s.get(at(MAX_AUDIENCE_LENGTH))).status).toBe(200);
      const res = await s.get(at(MAX_AUDIENCE_LENGTH + 1));
      expect(res.status).toBe(400);
      expect(await res.text()).toContain(
        `audience is ${MAX_AUDIENCE_LENGTH + 1} characters long; at most ${MAX_AUDIENCE_LENGTH} are accepted`,
      );
      // 2,000 distinct long audiences stay inside the cache's byte bound.
      const cache = s.server.state.tokens;
      for (let i = 0; i < 2000; i++) {
        const res = await s.get(`${V1}instance/service-accounts/default/identity?audience=https://${i}.${"b".repeat(2000)}`);
        expect(res.status).toBe(200);
        await res.arrayBuffer();
      }
      expect(cache.bytes).toBeLessThanOrEqual(32 * 1024 * 1024);
      expect(cache.size).toBeGreaterThan(1000);
    } finally {
      await s.stop();
    }
  });
});

describe("8: per-scope clients are bounded", () => {
  test("BoundedMap keeps the most recently used", () => {
    const m = new BoundedMap<string, number>(3);
    for (const [k, v] of [
      ["a", 1],
      ["b", 2],
      ["c", 3],
    ] as const)
      m.set(k, v);
    expect(m.get("a")).toBe(1); // a is now the most recent
    m.set("d", 4);
    expect(m.size).toBe(3);
    expect(m.get("b")).toBeUndefined();
    expect(m.get("a")).toBe(1);
  });

  test("-federate: 40 scope sets leave at most 32 clients", async () => {
    const file = await makeExternalAccount(fake, dir);
    const source = await FederatedSource.open(await readAdcFile(file));
    const account = { email: DEFAULT_EMAIL, scopes: [CLOUD] };
    for (let i = 0; i < 40; i++) await source.accessToken({ account, scopes: [`https://www.googleapis.com/auth/s${i}`] });
    expect((source as unknown as { clients: BoundedMap<string, unknown> }).clients.size).toBe(32);
  });
});
