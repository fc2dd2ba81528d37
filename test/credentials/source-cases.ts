/**
 * The cases every credential source runs (as hono runs one router suite against every router): access token,
 * scopes, ID token, audience, format=full, expiry, failure, and single-flight through the TokenCache. A source
 * that cannot meet a case names it in `omits` with the reason; conformance.test.ts checks those omissions against
 * the table in docs/credentials.md, so a case is never skipped silently.
 */
import { describe, expect, test } from "bun:test";
import type { JWTPayload } from "jose";
import type { Account, CredentialSource, IdTokenRequest, InstanceIdentity } from "../../src/credentials/source.ts";
import { CachedToken, TokenCache } from "../../src/credentials/token-cache.ts";
import { CredentialError } from "../../src/errors.ts";

export const CASES = ["access token", "scopes", "ID token", "audience", "format=full", "expiry", "failure", "single-flight"] as const;
export type CaseName = (typeof CASES)[number];

export const BIGQUERY = "https://www.googleapis.com/auth/bigquery";
export const CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform";

export const INSTANCE: InstanceIdentity = {
  projectId: "example-project",
  projectNumber: "123456789012",
  instanceId: "5912306046582812041",
  instanceName: "vm-1",
  zone: "projects/123456789012/zones/us-central1-a",
  instanceCreationTimestamp: 1_700_000_000,
  licenseIds: ["1000"],
};

/** A source ready for the cases, with what it takes to check its tokens. */
export interface Subject {
  source: CredentialSource;
  account: Account;
  /** Check that `token` is an access token for `account` with `scopes` (the fake's records, or the JWT's claims). */
  checkAccess(token: string, scopes: readonly string[]): Promise<void> | void;
  /** Verify an ID token's signature with the keys of whoever minted it; its claims. */
  verifyId(token: string): Promise<JWTPayload>;
  /** Make the upstream refuse the next ID-token call; the words the failure must carry. */
  breakUpstream(): string;
  heal(): void;
}

export interface SourceHarness {
  /** The class under test, as the omissions table names it. */
  name: string;
  /** Cases the source cannot meet, with the reason (also in docs/credentials.md). */
  omits: Partial<Record<CaseName, string>>;
  /** The subject, made once per harness (in beforeAll). */
  subject(): Subject;
}

const idRequest = (s: Subject, audience: string, format: "standard" | "full" = "standard"): IdTokenRequest => ({
  account: s.account,
  audience,
  format,
  licenses: format === "full",
  instance: INSTANCE,
});

/** A CredentialSource that counts calls to another. */
function counting(source: CredentialSource): { source: CredentialSource; calls: { access: number; identity: number } } {
  const calls = { access: 0, identity: 0 };
  return {
    calls,
    source: {
      describe: () => source.describe(),
      accessToken: (r) => {
        calls.access++;
        return source.accessToken(r);
      },
      idToken: (r) => {
        calls.identity++;
        return source.idToken(r);
      },
    },
  };
}

const CASE_BODIES: Record<CaseName, (s: Subject) => Promise<void>> = {
  "access token": async (s) => {
    const before = Date.now();
    const t = await s.source.accessToken({ account: s.account, scopes: s.account.scopes });
    expect(t.token.length).toBeGreaterThan(10);
    expect(t.expiresAt).toBeGreaterThan(before + 3000_000);
    await s.checkAccess(t.token, s.account.scopes);
  },
  scopes: async (s) => {
    const scopes = [CLOUD_PLATFORM, BIGQUERY];
    const t = await s.source.accessToken({ account: s.account, scopes });
    await s.checkAccess(t.token, scopes);
    const other = await s.source.accessToken({ account: s.account, scopes: [BIGQUERY] });
    expect(other.token).not.toBe(t.token);
    await s.checkAccess(other.token, [BIGQUERY]);
  },
  "ID token": async (s) => {
    const t = await s.source.idToken(idRequest(s, "https://svc.example.test"));
    const claims = await s.verifyId(t.token);
    expect(claims.iss).toBe("https://accounts.google.com");
    expect(typeof claims.sub).toBe("string");
  },
  audience: async (s) => {
    const [a, b] = await Promise.all(
      ["https://a.example.test", "https://b.example.test"].map((aud) => s.source.idToken(idRequest(s, aud))),
    );
    expect(a!.token).not.toBe(b!.token);
    expect((await s.verifyId(a!.token)).aud).toBe("https://a.example.test");
    expect((await s.verifyId(b!.token)).aud).toBe("https://b.example.test");
  },
  "format=full": async (s) => {
    const t = await s.source.idToken(idRequest(s, "https://full.example.test", "full"));
    const claims = await s.verifyId(t.token);
    expect(claims.email).toBe(s.account.email);
    expect(claims.google).toMatchObject({ compute_engine: { project_id: INSTANCE.projectId, license_id: ["1000"] } });
  },
  expiry: async (s) => {
    const t = await s.source.idToken(idRequest(s, "https://expiry.example.test"));
    const exp = (await s.verifyId(t.token)).exp!;
    expect(t.expiresAt).toBe(exp * 1000);
    const a = await s.source.accessToken({ account: s.account, scopes: s.account.scopes });
    expect(a.expiresAt).toBeLessThanOrEqual(Date.now() + 3600_000 + 5000);
  },
  failure: async (s) => {
    const words = s.breakUpstream();
    try {
      const e = (await s.source.idToken(idRequest(s, "https://failure.example.test")).catch((x: unknown) => x)) as Error;
      expect(e).toBeInstanceOf(CredentialError);
      expect(e.message).toContain(words);
      expect(e.message.split("\n")).toHaveLength(1);
      expect(e.message).not.toMatch(/eyJ|ya29\./);
    } finally {
      s.heal();
    }
    // Not kept by the source: the next call works.
    await s.verifyId((await s.source.idToken(idRequest(s, "https://failure.example.test"))).token);
  },
  "single-flight": async (s) => {
    const { source, calls } = counting(s.source);
    const cache = new TokenCache(source);
    const scopes = [CLOUD_PLATFORM, "https://www.googleapis.com/auth/single-flight"];
    const access = await Promise.all(Array.from({ length: 25 }, () => cache.accessToken(s.account, scopes)));
    expect(new Set(access.map((t) => t.token)).size).toBe(1);
    expect(calls.access).toBe(1);
    expect(cache.accessToken(s.account, scopes)).toBeInstanceOf(CachedToken);
    const ids = await Promise.all(Array.from({ length: 25 }, () => cache.idToken(idRequest(s, "https://single-flight.example.test"))));
    expect(new Set(ids.map((t) => t.token)).size).toBe(1);
    expect(calls.identity).toBe(1);
  },
};

/** Register the cases for one source: every case not in `omits`. */
export function runSourceCases(h: SourceHarness): void {
  describe(`${h.name} meets the credential-source cases`, () => {
    for (const name of CASES) {
      if (h.omits[name] !== undefined) continue;
      test(name, () => CASE_BODIES[name](h.subject()));
    }
  });
}
