/**
 * Google's own Node libraries, unchanged, against a running server in each credential mode: the emulated issuer,
 * static tokens from the environment, and a service-account key exchanged at a fake token endpoint.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as gcpMetadata from "gcp-metadata";
import { GoogleAuth } from "google-auth-library";
import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";
import { MetadataServer } from "../../src/index.ts";
import { readServiceAccountKey, ServiceAccountKeySource } from "../../src/credentials/service-account.ts";
import { makeServiceAccountKey, startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";

const EMAIL = "123456789012-compute@developer.gserviceaccount.com";
const AUDIENCE = "https://backend.example.com";

/** A static ID token as a user might export it: any JWT with an exp. */
const STATIC_ID_TOKEN = [
  Buffer.from(JSON.stringify({ alg: "RS256", typ: "JWT" })).toString("base64url"),
  Buffer.from(JSON.stringify({ aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 3600, iss: "https://accounts.google.com" })).toString(
    "base64url",
  ),
  "c2lnbmF0dXJl",
].join(".");

interface Mode {
  name: string;
  start(): Promise<MetadataServer>;
  checkAccessToken(token: string): void;
  checkIdToken(token: string): Promise<void>;
}

let fake: FakeGoogle;
let server: MetadataServer | undefined;
const savedEnv = { ...process.env };

beforeAll(async () => {
  fake = await startFakeGoogle();
  // Keep the libraries from finding real credentials on this machine.
  delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  process.env.CLOUDSDK_CONFIG = mkdtempSync(join(tmpdir(), "gcloud-empty-"));
  delete process.env.GOOGLE_CLOUD_PROJECT;
  delete process.env.GCLOUD_PROJECT;
});

afterAll(async () => {
  await server?.stop();
  await fake.stop();
  process.env = savedEnv;
});

const modes: Mode[] = [
  {
    name: "emulated issuer",
    start: async () => new MetadataServer({ serverConfig: { port: 0 } }),
    checkAccessToken: (t) => expect(t).toMatch(/^ya29\.[\w-]{100,}$/),
    async checkIdToken(t) {
      const jwks = createRemoteJWKSet(new URL(`${server!.url}/oauth2/v3/certs`));
      const { payload } = await jwtVerify(t, jwks, { issuer: "https://accounts.google.com", audience: AUDIENCE });
      // The Node library asks for format=full.
      expect(payload.email).toBe(EMAIL);
      expect((payload.google as { compute_engine: { project_id: string } }).compute_engine.project_id).toBe("example-project");
    },
  },
  {
    name: "static tokens from the environment",
    start: async () =>
      new MetadataServer({
        serverConfig: { port: 0 },
        env: { GOOGLE_ACCESS_TOKEN: "ya29.static-token-for-tests", GOOGLE_ID_TOKEN: STATIC_ID_TOKEN },
      }),
    checkAccessToken: (t) => expect(t).toBe("ya29.static-token-for-tests"),
    checkIdToken: async (t) => expect(t).toBe(STATIC_ID_TOKEN),
  },
  {
    name: "service account key through a fake token endpoint",
    async start() {
      const key = await makeServiceAccountKey(fake, { email: EMAIL, projectId: "example-project" });
      return new MetadataServer({
        serverConfig: { port: 0 },
        credentials: new ServiceAccountKeySource(await readServiceAccountKey(key.path)),
      });
    },
    checkAccessToken: (t) => expect(fake.isIssuedAccessToken(t)).toBe(true),
    async checkIdToken(t) {
      const { payload } = await jwtVerify(t, createRemoteJWKSet(new URL(fake.jwksUrl)), {
        audience: AUDIENCE,
        issuer: "https://accounts.google.com",
      });
      expect(payload.email).toBe(EMAIL);
    },
  },
];

for (const mode of modes) {
  describe(mode.name, () => {
    let restore: () => void;
    beforeAll(async () => {
      await server?.stop();
      server = await mode.start();
      await server.start();
      restore = server.applyEnv();
      gcpMetadata.resetIsAvailableCache();
    });
    afterAll(() => restore());

    test("gcp-metadata: isAvailable, project and instance values", async () => {
      expect(await gcpMetadata.isAvailable()).toBe(true);
      expect(await gcpMetadata.project("project-id")).toBe("example-project");
      expect(String(await gcpMetadata.project("numeric-project-id"))).toBe("123456789012");
      // json-bigint keeps the id exact.
      expect(String(await gcpMetadata.instance("id"))).toBe("4520031799277581759");
      expect(await gcpMetadata.instance("zone")).toBe("projects/123456789012/zones/us-central1-a");
      expect(await gcpMetadata.instance({ property: "attributes/startup-script" })).toBe("#!/bin/bash\necho hello");
      expect(await gcpMetadata.universe("universe-domain")).toBe("googleapis.com");
      expect(await gcpMetadata.instance("tags")).toEqual(["http-server"]);
    });

    test("gcp-metadata: recursive reads", async () => {
      const disks = await gcpMetadata.instance({ property: "disks/", params: { recursive: "true" } });
      expect(disks).toEqual([{ deviceName: "persistent-disk-0", index: 0, interface: "SCSI", mode: "READ_WRITE", type: "PERSISTENT" }]);
      const sa = await gcpMetadata.instance({ property: "service-accounts/default/", params: { recursive: "true" } });
      expect(sa.email).toBe(EMAIL);
      const all = await gcpMetadata.bulk([{ metadataKey: "instance/name" }, { metadataKey: "project/project-id" }] as const);
      expect(all).toEqual({ "instance/name": "vm-1", "project/project-id": "example-project" });
    });

    test("google-auth-library: project id, credentials, access token", async () => {
      const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/cloud-platform"] });
      expect(await auth.getProjectId()).toBe("example-project");
      const client = await auth.getClient();
      expect(client.constructor.name).toBe("Compute");
      const creds = await auth.getCredentials();
      expect(creds.client_email).toBe(EMAIL);
      const token = await auth.getAccessToken();
      expect(token).toBeString();
      mode.checkAccessToken(token!);
      // Cached: the same token again.
      expect(await new GoogleAuth().getAccessToken()).toBe(token);
    });

    test("google-auth-library: getIdTokenClient gives a token for the audience", async () => {
      const auth = new GoogleAuth();
      const idClient = await auth.getIdTokenClient(AUDIENCE);
      const headers = await idClient.getRequestHeaders();
      const authz = headers.get("authorization") ?? "";
      expect(authz).toStartWith("Bearer ");
      const jwt = authz.slice("Bearer ".length);
      expect(decodeJwt(jwt).aud).toBe(AUDIENCE);
      await mode.checkIdToken(jwt);
    });
  });
}
