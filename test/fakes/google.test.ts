/**
 * Proves the Google fake is real: the official client library talks to it unmodified (only its transport is
 * pointed here), signatures are checked for real, and tokens it mints verify against its published keys.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Impersonated, IdentityPoolClient, JWT, UserRefreshClient } from "google-auth-library";
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT } from "jose";
import {
  CLOUD_PLATFORM_SCOPE,
  GOOGLE_ISSUER,
  GOOGLE_TOKEN_URL,
  makeAuthorizedUser,
  makeServiceAccountKey,
  makeSubjectIssuer,
  startFakeGoogle,
  type FakeGoogle,
  type ServiceAccountKey,
} from "./google.ts";

const EMAIL = "runner@fake-project.iam.gserviceaccount.com";
const TARGET = "target@fake-project.iam.gserviceaccount.com";
const WIF_AUDIENCE = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/providers/oidc";

let google: FakeGoogle;
let sa: ServiceAccountKey;

beforeAll(async () => {
  google = await startFakeGoogle();
  sa = await makeServiceAccountKey(google, { email: EMAIL, projectId: "fake-project" });
});
afterAll(() => google.stop());
beforeEach(() => google.reset());

/** A JWT client built from the key file, with its transport pointed at the fake. */
const jwtClient = (scopes: string[] = [CLOUD_PLATFORM_SCOPE]) =>
  new JWT({ keyFile: sa.path, scopes, transporterOptions: { fetchImplementation: google.fetch } });

/** Sign an assertion like a client library would, with overridable claims. */
const assertion = (claims: Record<string, unknown> = {}, key = sa.privateKeyPem) => {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: EMAIL, aud: GOOGLE_TOKEN_URL, scope: CLOUD_PLATFORM_SCOPE, iat, exp: iat + 3600, ...claims })
    .setProtectedHeader({ alg: "RS256" })
    .sign(createPrivateKey(key));
};

const postForm = (url: string, fields: Record<string, string>, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", body: new URLSearchParams(fields), headers });

const postJson = (url: string, body: unknown, bearer?: string) =>
  fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
  });

const tokenFor = async (a: string) =>
  postForm(google.tokenUrl, { grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion: a });

/** An access token for EMAIL, straight from the fake. */
const sourceToken = async (scope = CLOUD_PLATFORM_SCOPE) => {
  const res = await tokenFor(await assertion({ scope }));
  return ((await res.json()) as { access_token: string }).access_token;
};

describe("service-account key file", () => {
  test("has Google's exact fields, in order, with token_uri pointing at the fake", () => {
    const onDisk = JSON.parse(readFileSync(sa.path, "utf8"));
    expect(Object.keys(onDisk)).toEqual([
      "type",
      "project_id",
      "private_key_id",
      "private_key",
      "client_email",
      "client_id",
      "auth_uri",
      "token_uri",
      "auth_provider_x509_cert_url",
      "client_x509_cert_url",
      "universe_domain",
    ]);
    expect(onDisk).toEqual(sa.json);
    expect(onDisk.type).toBe("service_account");
    expect(onDisk.token_uri).toBe(google.tokenUrl);
    expect(onDisk.private_key).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    expect(onDisk.private_key_id).toMatch(/^[0-9a-f]{40}$/);
    expect(onDisk.client_id).toBe(google.uniqueId(EMAIL));
    expect(onDisk.client_id).toMatch(/^1\d{20}$/);
    expect(onDisk.universe_domain).toBe("googleapis.com");
  });
});

describe("google-auth-library JWT client against the fake", () => {
  test("v11 ignores token_uri: both access and ID tokens go to the hard-coded Google URL", async () => {
    const seen: string[] = [];
    const recordThenForward = (input: string | URL | Request, init?: RequestInit) => {
      seen.push(String(input instanceof Request ? input.url : input));
      return google.fetch(input, init);
    };
    const client = new JWT({
      keyFile: sa.path,
      scopes: [CLOUD_PLATFORM_SCOPE],
      transporterOptions: { fetchImplementation: recordThenForward },
    });
    await client.getAccessToken();
    await client.fetchIdToken("https://service.example.test");
    expect(seen).toEqual([GOOGLE_TOKEN_URL, GOOGLE_TOKEN_URL]);
  });

  test("gets an access token through fake.fetch; the assertion is what Google expects", async () => {
    const { token } = await jwtClient().getAccessToken();
    expect(token).toStartWith("ya29.fake-");
    expect(google.isIssuedAccessToken(token!)).toBe(true);
    expect(google.tokenInfo(token!)).toMatchObject({ email: EMAIL, scopes: [CLOUD_PLATFORM_SCOPE], via: "token" });
    expect(google.calls.token).toBe(1);
    const sent = google.lastAssertion!;
    expect(sent.header).toEqual({ alg: "RS256" }); // gtoken sends no kid: the fake must try every key of the account
    expect(sent.payload).toMatchObject({ iss: EMAIL, aud: GOOGLE_TOKEN_URL, scope: CLOUD_PLATFORM_SCOPE });
    expect(sent.payload.exp! - sent.payload.iat!).toBe(3600);
  });

  test("fetchIdToken returns an ID token that verifies against the fake's JWKS", async () => {
    const audience = "https://service.example.test";
    const idToken = await jwtClient().fetchIdToken(audience);
    const { payload, protectedHeader } = await jwtVerify(idToken, createRemoteJWKSet(new URL(google.jwksUrl)), {
      issuer: GOOGLE_ISSUER,
      audience,
      algorithms: ["RS256"],
    });
    expect(protectedHeader.kid).toBeString();
    expect(payload).toMatchObject({ email: EMAIL, email_verified: true, sub: google.uniqueId(EMAIL), azp: google.uniqueId(EMAIL) });
    expect(payload.exp! - payload.iat!).toBe(3600);
    expect(google.lastAssertion!.payload.target_audience).toBe(audience);
  });

  test("retries a 5xx from the token endpoint by itself", async () => {
    google.failNext("token", 1, 500);
    const { token } = await jwtClient().getAccessToken();
    expect(google.isIssuedAccessToken(token!)).toBe(true);
    expect(google.calls.token).toBe(2);
  });
});

describe("token endpoint verifies assertions for real", () => {
  const expectGrantError = async (res: Response, description: RegExp, error = "invalid_grant") => {
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: string; error_description: string };
    expect(body.error).toBe(error);
    expect(body.error_description).toMatch(description);
  };

  test("accepts the fake's own token URL as aud", async () => {
    const res = await tokenFor(await assertion({ aud: google.tokenUrl }));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ expires_in: 3599, token_type: "Bearer" });
  });

  test("rejects a tampered assertion (payload changed, signature kept)", async () => {
    const [h, , s] = (await assertion()).split(".");
    const forged = Buffer.from(
      JSON.stringify({ ...decodeJwt(await assertion()), scope: "https://www.googleapis.com/auth/admin" }),
    ).toString("base64url");
    await expectGrantError(await tokenFor(`${h}.${forged}.${s}`), /Invalid JWT Signature/);
    expect(google.lastAssertion!.payload.scope).toBe("https://www.googleapis.com/auth/admin");
  });

  test("rejects an assertion signed by a key the account does not hold", async () => {
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    await expectGrantError(await tokenFor(await assertion({}, other)), /Invalid JWT Signature/);
  });

  test("rejects unknown issuer, wrong audience, expired and over-long assertions", async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectGrantError(await tokenFor(await assertion({ iss: "nobody@x.iam.gserviceaccount.com" })), /account not found/);
    await expectGrantError(await tokenFor(await assertion({ aud: "https://example.com/token" })), /audience/);
    await expectGrantError(await tokenFor(await assertion({ iat: now - 7200, exp: now - 3600 })), /iat and exp/);
    await expectGrantError(await tokenFor(await assertion({ iat: now, exp: now + 7200 })), /iat and exp/);
  });

  test("needs a scope or a target_audience, and a known grant type", async () => {
    await expectGrantError(await tokenFor(await assertion({ scope: undefined })), /scope/, "invalid_scope");
    await expectGrantError(await postForm(google.tokenUrl, { grant_type: "password" }), /grant_type/, "unsupported_grant_type");
  });
});

describe("authorized_user refresh grant", () => {
  test("UserRefreshClient gets a token via endpoints.oauth2TokenUrl", async () => {
    const user = await makeAuthorizedUser(google);
    const client = new UserRefreshClient({
      clientId: user.json.client_id,
      clientSecret: user.json.client_secret,
      refreshToken: user.json.refresh_token,
      endpoints: { oauth2TokenUrl: google.tokenUrl },
    });
    const { token } = await client.getAccessToken();
    expect(google.isIssuedAccessToken(token!)).toBe(true);
    expect(google.tokenInfo(token!)?.subject).toBe(user.json.client_id);
  });

  test("rejects a wrong client secret and a wrong refresh token", async () => {
    const { json } = await makeAuthorizedUser(google);
    const grant = {
      grant_type: "refresh_token",
      client_id: json.client_id,
      client_secret: json.client_secret,
      refresh_token: json.refresh_token,
    };
    const badSecret = await postForm(google.tokenUrl, { ...grant, client_secret: "nope" });
    expect(badSecret.status).toBe(401);
    expect(await badSecret.json()).toMatchObject({ error: "invalid_client" });
    const badToken = await postForm(google.tokenUrl, { ...grant, refresh_token: "1//stolen" });
    expect(badToken.status).toBe(400);
    expect(await badToken.json()).toMatchObject({ error: "invalid_grant" });
  });
});

describe("IAM Credentials", () => {
  const iamUrl = (method: string, email = TARGET) => `${google.url}/v1/projects/-/serviceAccounts/${email}:${method}`;

  test("rejects a missing or unknown bearer with Google's 401, and a token without cloud-platform scope with 403", async () => {
    const body = { scope: [CLOUD_PLATFORM_SCOPE] };
    const missing = await postJson(iamUrl("generateAccessToken"), body);
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toStartWith("Bearer");
    expect(await missing.json()).toMatchObject({ error: { code: 401, status: "UNAUTHENTICATED" } });
    const unknown = await postJson(iamUrl("generateIdToken"), { audience: "a" }, "ya29.not-from-the-fake");
    expect(unknown.status).toBe(401);
    expect(await unknown.json()).toMatchObject({ error: { code: 401, status: "UNAUTHENTICATED" } });
    const narrow = await postJson(
      iamUrl("signJwt"),
      { payload: "{}" },
      await sourceToken("https://www.googleapis.com/auth/devstorage.read_only"),
    );
    expect(narrow.status).toBe(403);
    expect(google.calls.generateAccessToken + google.calls.generateIdToken + google.calls.signJwt).toBe(3);
  });

  test("generateAccessToken issues a token for the target with the requested lifetime", async () => {
    const res = await postJson(
      iamUrl("generateAccessToken"),
      { scope: [CLOUD_PLATFORM_SCOPE], lifetime: "600s", delegates: [] },
      await sourceToken(),
    );
    expect(res.status).toBe(200);
    const { accessToken, expireTime } = (await res.json()) as { accessToken: string; expireTime: string };
    expect(expireTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(Date.parse(expireTime) - Date.now()).toBeWithin(595_000, 601_000);
    expect(google.tokenInfo(accessToken)).toMatchObject({ email: TARGET, via: "generateAccessToken" });
  });

  test("generateIdToken mints a verifiable ID token, with email only when asked", async () => {
    const bearer = await sourceToken();
    const jwks = createRemoteJWKSet(new URL(google.jwksUrl));
    for (const includeEmail of [true, false]) {
      const res = await postJson(iamUrl("generateIdToken"), { audience: "https://aud.example.test", includeEmail }, bearer);
      const { token } = (await res.json()) as { token: string };
      const { payload } = await jwtVerify(token, jwks, { issuer: GOOGLE_ISSUER, audience: "https://aud.example.test" });
      expect(payload.sub).toBe(google.uniqueId(TARGET));
      expect(payload.email).toBe(includeEmail ? TARGET : undefined);
    }
  });

  test("signJwt signs with a per-account key published at /service_accounts/v1/jwk/{email}", async () => {
    const res = await postJson(iamUrl("signJwt"), { payload: JSON.stringify({ sub: "x", aud: "y" }) }, await sourceToken());
    const { keyId, signedJwt } = (await res.json()) as { keyId: string; signedJwt: string };
    expect(decodeProtectedHeader(signedJwt).kid).toBe(keyId);
    const jwks = createRemoteJWKSet(new URL(`${google.url}/service_accounts/v1/jwk/${TARGET}`));
    const { payload } = await jwtVerify(signedJwt, jwks, { audience: "y" });
    expect(payload.exp! - Math.floor(Date.now() / 1000)).toBeWithin(3595, 3601); // exp added, as Google does
    await expect(jwtVerify(signedJwt, createRemoteJWKSet(new URL(google.jwksUrl)))).rejects.toThrow();
  });

  test("google-auth-library Impersonated works with endpoint: fake.url", async () => {
    const client = new Impersonated({
      sourceClient: jwtClient(),
      targetPrincipal: TARGET,
      targetScopes: [CLOUD_PLATFORM_SCOPE],
      lifetime: 900,
      endpoint: google.url,
    });
    const { token } = await client.getAccessToken();
    expect(google.tokenInfo(token!)).toMatchObject({ email: TARGET, via: "generateAccessToken" });
    const idToken = await client.fetchIdToken("https://aud.example.test", { includeEmail: true });
    const { payload } = await jwtVerify(idToken, createRemoteJWKSet(new URL(google.jwksUrl)), { audience: "https://aud.example.test" });
    expect(payload.email).toBe(TARGET);
    const call = google.requests.find((r) => r.endpoint === "generateAccessToken")!;
    expect(call.body).toMatchObject({ scope: [CLOUD_PLATFORM_SCOPE], lifetime: "900s", delegates: [] });
    expect(google.tokenInfo(call.bearer!)?.email).toBe(EMAIL);
  });
});

describe("STS token exchange", () => {
  const exchange = (subjectToken: string, audience = WIF_AUDIENCE) => ({
    grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
    audience,
    scope: CLOUD_PLATFORM_SCOPE,
    requested_token_type: "urn:ietf:params:oauth:token-type:access_token",
    subject_token: subjectToken,
    subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
  });

  test("IdentityPoolClient (file source) exchanges a subject token, then impersonates", async () => {
    const issuer = await makeSubjectIssuer(google);
    const tokenFile = join(tmpdir(), `subject-${process.pid}-${Date.now()}.jwt`);
    await writeFile(tokenFile, await issuer.sign({ sub: "workload-1", aud: `https:${WIF_AUDIENCE}` }));
    const base = {
      type: "external_account" as const,
      audience: WIF_AUDIENCE,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      token_url: google.stsUrl,
      credential_source: { file: tokenFile },
    };
    const direct = await new IdentityPoolClient(base).getAccessToken();
    expect(google.tokenInfo(direct.token!)).toMatchObject({
      via: "sts",
      subject: "principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/subject/workload-1",
    });
    const viaSa = await new IdentityPoolClient({
      ...base,
      service_account_impersonation_url: google.impersonationUrl(TARGET),
    }).getAccessToken();
    expect(google.tokenInfo(viaSa.token!)).toMatchObject({ email: TARGET, via: "generateAccessToken" });
    expect(google.calls.sts).toBe(2);
    expect(google.calls.generateAccessToken).toBe(1);
    await rm(tokenFile);
  });

  test("accepts a JSON body with camelCase fields", async () => {
    const issuer = await makeSubjectIssuer(google);
    const res = await postJson(google.stsUrl, {
      grantType: "urn:ietf:params:oauth:grant-type:token-exchange",
      audience: WIF_AUDIENCE,
      scope: CLOUD_PLATFORM_SCOPE,
      requestedTokenType: "urn:ietf:params:oauth:token-type:access_token",
      subjectToken: await issuer.sign({ sub: "s", aud: `https:${WIF_AUDIENCE}` }),
      subjectTokenType: "urn:ietf:params:oauth:token-type:id_token",
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
      token_type: "Bearer",
      expires_in: 3600,
    });
  });

  test("rejects unregistered issuers, tampered tokens, wrong audiences and expired tokens", async () => {
    const issuer = await makeSubjectIssuer(google);
    const good = await issuer.sign({ sub: "s", aud: `https:${WIF_AUDIENCE}` });
    const [h, , s] = good.split(".");
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...decodeJwt(good), sub: "admin" })).toString("base64url")}.${s}`;
    const cases = [
      await new SignJWT({ iss: "https://stranger.example.test", sub: "s", aud: `https:${WIF_AUDIENCE}` })
        .setProtectedHeader({ alg: "RS256" })
        .setExpirationTime("10m")
        .sign(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey),
      tampered,
      await issuer.sign({ sub: "s", aud: "https://elsewhere.example.test" }),
      await issuer.sign({ sub: "s", aud: `https:${WIF_AUDIENCE}` }, -10),
      "not-a-jwt",
    ];
    for (const subjectToken of cases) {
      const res = await postForm(google.stsUrl, exchange(subjectToken));
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: "invalid_grant" });
    }
    expect((await postForm(google.stsUrl, exchange(good))).status).toBe(200);
  });
});

describe("control and introspection", () => {
  test("failNext answers N requests with the status, in Google's shape, then recovers; calls count all", async () => {
    google.failNext("token", 2, 503);
    const a = await assertion();
    const first = await tokenFor(a);
    expect(first.status).toBe(503);
    expect(await first.json()).toMatchObject({ error: "internal_failure" });
    expect((await tokenFor(a)).status).toBe(503);
    expect((await tokenFor(a)).status).toBe(200);
    expect(google.calls.token).toBe(3);

    google.failNext("generateAccessToken", 1, 403);
    const denied = await postJson(
      `${google.url}/v1/projects/-/serviceAccounts/${TARGET}:generateAccessToken`,
      { scope: [CLOUD_PLATFORM_SCOPE] },
      await sourceToken(),
    );
    expect(denied.status).toBe(403);
    expect(await denied.json()).toMatchObject({ error: { code: 403, status: "PERMISSION_DENIED" } });

    google.reset();
    expect(Object.values(google.calls).every((n) => n === 0)).toBe(true);
    expect(google.requests).toHaveLength(0);
    expect(google.lastAssertion).toBeUndefined();
  });

  test("delay holds responses without serialising them; reset clears it", async () => {
    const a = await assertion();
    google.delay(150);
    let started = performance.now();
    const responses = await Promise.all(Array.from({ length: 5 }, () => tokenFor(a)));
    const elapsed = performance.now() - started;
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(elapsed).toBeGreaterThanOrEqual(140);
    expect(elapsed).toBeLessThan(2 * 150); // concurrent, so a single-flight test sees the true upstream call count
    expect(google.calls.token).toBe(5);
    google.reset();
    started = performance.now();
    await fetch(google.jwksUrl);
    expect(performance.now() - started).toBeLessThan(140);
    expect(google.calls.certs).toBe(1);
  });

  test("fake.fetch refuses Google hosts it does not fake instead of leaking to the network", async () => {
    await expect(google.fetch("https://storage.googleapis.com/b/o")).rejects.toThrow(/not faked/);
    const jwks = (await (await google.fetch("https://www.googleapis.com/oauth2/v3/certs")).json()) as { keys: { kid: string }[] };
    expect(jwks.keys).toHaveLength(1);
  });

  test("stop() closes the port and removes written key files", async () => {
    const fake = await startFakeGoogle();
    const key = await makeServiceAccountKey(fake);
    expect(existsSync(key.path)).toBe(true);
    await fake.stop();
    await fake.stop();
    expect(existsSync(key.path)).toBe(false);
    await expect(fetch(fake.jwksUrl)).rejects.toThrow();
  });
});
