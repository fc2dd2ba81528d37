/**
 * `-impersonate` and `-federate` on the command line: Application Default Credentials found and checked before
 * the server listens (a missing, unreadable or wrong-type file is a one-line error, exit 1), `-iamURL` and
 * `-tokenURL` checked, and the source made. No token is fetched at start-up, as in the Go emulator.
 */
import { UsageError } from "../errors.ts";
import type { Logger } from "../observability/log.ts";
import { findAdcFile, gcloudConfigDir, readAdcFile, WELL_KNOWN_FILE } from "../credentials/adc.ts";
import { IAM_CREDENTIALS_URL } from "../credentials/iam.ts";
import { GOOGLE_TOKEN_URL } from "../credentials/service-account.ts";
import type { CredentialSource } from "../credentials/source.ts";
import type { Flags } from "./flags.ts";

/** The Go emulator's message when -federate is given without the variable (its typo kept, for grep). */
export const FEDERATE_NEEDS_ADC = "GOOGLE_APPLICATION_CREDENTIAL must be set with --federate";

/** A flag's value as an http(s) URL, or a UsageError naming the flag and its default. */
export function httpUrlFlag(name: string, text: string, fallback: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    throw new UsageError("BAD_URL", `-${name} ${JSON.stringify(text)} is not an http(s) URL; the default is ${fallback}`);
  }
  return text;
}

/** `-impersonate`: source credentials from ADC; tokens for the config's accounts from IAM Credentials. */
export async function openImpersonatedSource(
  flags: Flags,
  env: Record<string, string | undefined>,
  log: Logger,
): Promise<CredentialSource> {
  const iamUrl = httpUrlFlag("iamURL", flags.iamURL, IAM_CREDENTIALS_URL);
  const tokenUrl = httpUrlFlag("tokenURL", flags.tokenURL, GOOGLE_TOKEN_URL);
  const found = findAdcFile(env);
  if (!found) {
    const dir = gcloudConfigDir(env);
    throw new UsageError(
      "NO_ADC",
      `-impersonate needs source credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account key or an authorized_user file, or run gcloud auth application-default login${dir ? ` (no ${dir}/${WELL_KNOWN_FILE})` : ""}`,
    );
  }
  const adc = await readAdcFile(found.path);
  const { ImpersonatedSource } = await import("../credentials/impersonated.ts");
  const source = new ImpersonatedSource({ adc, iamUrl, tokenUrl });
  log.info("using service account impersonation for credentials", {
    source: source.source.type,
    principal: source.source.principal,
    file: adc.path,
    from: found.fromEnv ? "GOOGLE_APPLICATION_CREDENTIALS" : "gcloud well-known file",
    ...(source.source.tokenUrl !== GOOGLE_TOKEN_URL ? { sourceTokenURL: source.source.tokenUrl } : {}),
    ...(iamUrl !== IAM_CREDENTIALS_URL ? { iamURL: iamUrl } : {}),
  });
  return source;
}

/** `-federate`: an external_account file named by GOOGLE_APPLICATION_CREDENTIALS (required, as in the Go emulator). */
export async function openFederatedSource(flags: Flags, env: Record<string, string | undefined>, log: Logger): Promise<CredentialSource> {
  const iamUrl = httpUrlFlag("iamURL", flags.iamURL, IAM_CREDENTIALS_URL);
  const path = env.GOOGLE_APPLICATION_CREDENTIALS;
  if (!path) {
    throw new UsageError(
      "NO_ADC",
      `${FEDERATE_NEEDS_ADC}: point GOOGLE_APPLICATION_CREDENTIALS at an external_account credential configuration`,
    );
  }
  const adc = await readAdcFile(path);
  const { DEFAULT_STS_URL, FederatedSource } = await import("../credentials/federated.ts");
  const source = await FederatedSource.open(adc, { iamUrl });
  const credentialSource = adc.json.credential_source as Record<string, unknown>;
  log.info("using workload identity federation for credentials", {
    file: adc.path,
    audience: String(adc.json.audience),
    subject:
      credentialSource.file !== undefined
        ? `file ${String(credentialSource.file)}`
        : credentialSource.url !== undefined
          ? `url ${String(credentialSource.url)}`
          : "other",
    sts: typeof adc.json.token_url === "string" ? adc.json.token_url : DEFAULT_STS_URL,
    ...(source.serviceAccount ? { impersonate: source.serviceAccount } : {}),
    ...(iamUrl !== IAM_CREDENTIALS_URL ? { iamURL: iamUrl } : {}),
  });
  return source;
}
