/**
 * Credential sources described as data, opened in one place. The command line turns its flags into a
 * {@link CredentialSpec}; the server opens it once its config is loaded (a TPM key belongs to the config's default
 * account). Opening checks everything that can be checked without a token request: files are read and their
 * fields checked, a TPM key is loaded and makes one test signature. No token is fetched, as in the Go emulator.
 *
 * @example
 * const { source, notes } = await openSource({ type: "serviceAccountKey", keyFile: "key.json" }, context);
 */
import type { Environment } from "../environment.ts";
import { UsageError } from "../errors.ts";
import type { TpmOptions } from "../tpm/signer.ts";
import { findAdcFile, readAdcFile, WELL_KNOWN_FILE } from "./adc.ts";
import { EmulatedIssuer } from "./emulated.ts";
import { DEFAULT_STS_URL, GOOGLE_TOKEN_URL, IAM_CREDENTIALS_URL } from "./google.ts";
import type { CredentialSource } from "./source.ts";

/** Where tokens come from, as options: one of the Go emulator's credential modes, or the emulated issuer. */
export type CredentialSpec =
  /** The emulated issuer: `iss` of its ID tokens, and an optional PKCS#8 PEM file that keeps its key across runs. */
  | { type: "emulated"; issuer?: string; keyFile?: string }
  /** A service-account key file (`-serviceAccountFile`). */
  | { type: "serviceAccountKey"; keyFile: string }
  /** Impersonation of the config's accounts with ADC as the source (`-impersonate`). */
  | { type: "impersonated"; iamUrl?: string; tokenUrl?: string }
  /**
   * Workload identity federation from the external_account file in GOOGLE_APPLICATION_CREDENTIALS (`-federate`).
   * `iamUrl`, when given, is where ID tokens are minted; else the origin of the file's
   * `service_account_impersonation_url`, else Google's.
   */
  | { type: "federated"; iamUrl?: string }
  /** A key held in a TPM, for the config's default account (`-tpm`). */
  | { type: "tpm"; tpm: TpmOptions; tokenUrl?: string; useOauthToken?: boolean }
  /** The token and identity endpoints of another metadata server (`-upstream` without a credential flag). */
  | { type: "upstream"; url: string };

/** A line to log once the server is up: start-up errors come first and alone. */
export interface Note {
  level: "info" | "warn";
  message: string;
  fields?: Record<string, unknown>;
}

export interface OpenContext {
  env: Environment;
  /** The config's default account e-mail (environment overrides applied); only the TPM asks for it. */
  defaultEmail(): string;
  /** Static tokens cover both kinds, so the opened source serves none: say nothing of it. */
  quiet?: boolean;
  /** Deadline of a source's calls when a request carries none (the server's upstream timeout). */
  timeoutMs?: number;
  /** The server's clock (virtual, see clock.ts), for the tokens minted here; Date.now by default. */
  now?: () => number;
  /** Lifetime of the tokens minted here (emulated issuer), ms; one hour by default. */
  tokenLifetimeMs?: number;
}

/** Is it a spec (data) rather than a source (an object with methods)? */
export function isCredentialSpec(value: object): value is CredentialSpec {
  return typeof (value as { type?: unknown }).type === "string" && typeof (value as CredentialSource).accessToken !== "function";
}

/** Open a source; throws CredentialError, UsageError or TpmError with a one-line message. */
export async function openSource(spec: CredentialSpec, ctx: OpenContext): Promise<{ source: CredentialSource; notes: Note[] }> {
  const notes: Note[] = [];
  const timeout = ctx.timeoutMs !== undefined ? { timeoutMs: ctx.timeoutMs } : {};
  const note = (level: Note["level"], message: string, fields?: Record<string, unknown>) => {
    if (!ctx.quiet) notes.push({ level, message, ...(fields ? { fields } : {}) });
  };
  switch (spec.type) {
    case "emulated": {
      const issuer = new EmulatedIssuer({
        ...(spec.issuer ? { issuer: spec.issuer } : {}),
        ...(spec.keyFile ? { keyFile: spec.keyFile } : {}),
        ...(ctx.now ? { now: ctx.now } : {}),
        ...(ctx.tokenLifetimeMs ? { lifetimeSeconds: ctx.tokenLifetimeMs / 1000 } : {}),
      });
      // A named key file is read now, so a bad one stops start-up instead of the first ID token request.
      if (spec.keyFile) await issuer.openid.jwks();
      note("warn", "no credentials given: using the emulated issuer; its tokens are minted locally and are not valid at Google");
      return { source: issuer, notes };
    }
    case "serviceAccountKey": {
      const { readServiceAccountKey, ServiceAccountKeySource } = await import("./service-account.ts");
      const key = await readServiceAccountKey(spec.keyFile);
      note("info", "using service account key file for credentials", { email: key.client_email, token_uri: key.token_uri });
      let configured: string | undefined;
      try {
        configured = ctx.defaultEmail();
      } catch {
        // no default account: the key's own account is the one served
      }
      if (configured !== undefined && configured !== key.client_email) {
        note(
          "warn",
          "the key belongs to another account than the config's default one: tokens for default are the key's, and accounts other than these two answer 404",
          { key: key.client_email, default: configured },
        );
      }
      return { source: new ServiceAccountKeySource(key, timeout), notes };
    }
    case "impersonated": {
      const iamUrl = spec.iamUrl ?? IAM_CREDENTIALS_URL;
      const found = findAdcFile(ctx.env);
      if (!found) {
        const dir = ctx.env.gcloudConfigDir;
        throw new UsageError(
          "NO_ADC",
          `-impersonate needs source credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account key or an authorized_user file, or run gcloud auth application-default login${dir ? ` (no ${dir}/${WELL_KNOWN_FILE})` : ""}`,
        );
      }
      const adc = await readAdcFile(found.path);
      const { ImpersonatedSource } = await import("./impersonated.ts");
      const source = new ImpersonatedSource({ adc, iamUrl, ...(spec.tokenUrl ? { tokenUrl: spec.tokenUrl } : {}), ...timeout });
      note("info", "using service account impersonation for credentials", {
        source: source.source.type,
        principal: source.source.principal,
        file: adc.path,
        from: found.fromEnv ? "GOOGLE_APPLICATION_CREDENTIALS" : "gcloud well-known file",
        ...(source.source.tokenUrl !== GOOGLE_TOKEN_URL ? { sourceTokenURL: source.source.tokenUrl } : {}),
        ...(iamUrl !== IAM_CREDENTIALS_URL ? { iamURL: iamUrl } : {}),
      });
      return { source, notes };
    }
    case "federated": {
      const path = ctx.env.credentialsFile;
      if (!path) {
        throw new UsageError(
          "NO_ADC",
          `${FEDERATE_NEEDS_ADC}: point GOOGLE_APPLICATION_CREDENTIALS at an external_account credential configuration`,
        );
      }
      const adc = await readAdcFile(path);
      const { FederatedSource } = await import("./federated.ts");
      const source = await FederatedSource.open(adc, { ...(spec.iamUrl ? { iamUrl: spec.iamUrl } : {}), ...timeout });
      const iamUrl = source.iamUrl;
      const subject = adc.json.credential_source as Record<string, unknown>;
      note("info", "using workload identity federation for credentials", {
        file: adc.path,
        audience: String(adc.json.audience),
        subject:
          subject.file !== undefined ? `file ${String(subject.file)}` : subject.url !== undefined ? `url ${String(subject.url)}` : "other",
        sts: typeof adc.json.token_url === "string" ? adc.json.token_url : DEFAULT_STS_URL,
        ...(source.serviceAccount ? { impersonate: source.serviceAccount } : {}),
        ...(iamUrl !== IAM_CREDENTIALS_URL ? { iamURL: iamUrl } : {}),
      });
      return { source, notes };
    }
    case "tpm": {
      const tokenUrl = spec.tokenUrl ?? GOOGLE_TOKEN_URL;
      const email = ctx.defaultEmail();
      const [{ openTpmSigner }, { TpmSource }] = await Promise.all([import("../tpm/signer.ts"), import("./tpm.ts")]);
      // One deadline for each TPM call and each token-endpoint exchange.
      const opts = { ...timeout, ...spec.tpm };
      const signer = await openTpmSigner(opts);
      note("info", "using a TPM key for credentials", {
        email,
        tpm: opts.path,
        key: opts.keyfile ?? `0x${opts.persistentHandle!.toString(16).padStart(8, "0")}`,
        fingerprint: signer.fingerprint,
        tokens: spec.useOauthToken ? "oauth2 jwt-bearer exchange" : "self-signed JWT access tokens",
        ...(spec.useOauthToken || tokenUrl !== GOOGLE_TOKEN_URL ? { tokenURL: tokenUrl } : {}),
      });
      return { source: new TpmSource({ signer, email, tokenUrl, useOauthToken: spec.useOauthToken ?? false, ...timeout }), notes };
    }
    case "upstream": {
      const { UpstreamSource } = await import("./metadata-server.ts");
      note("info", "tokens and identity tokens from the upstream metadata server", { url: spec.url });
      return { source: new UpstreamSource(spec.url, timeout), notes };
    }
  }
}

/** The Go emulator's message when -federate is given without the variable (its typo kept, for grep). */
export const FEDERATE_NEEDS_ADC = "GOOGLE_APPLICATION_CREDENTIAL must be set with --federate";
