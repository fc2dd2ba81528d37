/**
 * Application Default Credentials files, found where Google's client libraries look: the file named by
 * `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's well-known file (`$CLOUDSDK_CONFIG/application_default_credentials.json`,
 * by default `~/.config/gcloud/…`, `%APPDATA%\gcloud\…` on Windows). `-impersonate` takes its source credentials
 * from one; `-federate` needs an `external_account` one named by the environment variable.
 *
 * @example
 *   const found = findAdcFile(readEnvironment(process.env)); // { path, fromEnv } or undefined
 *   const adc = await readAdcFile(found!.path);        // { path, type, json }
 */
import type { Environment } from "../environment.ts";
import { CredentialError, unreadableReason } from "../errors.ts";

/** A parsed ADC file: its path, its `type` and its JSON. Secrets stay in `json`; never log it. */
export interface AdcFile {
  path: string;
  type: string;
  json: Record<string, unknown>;
}

export const WELL_KNOWN_FILE = "application_default_credentials.json";

/**
 * Where ADC comes from: `GOOGLE_APPLICATION_CREDENTIALS` when set (whether or not the file exists: a wrong path is
 * an error, not a fall-through), else the well-known file if it exists, else undefined.
 */
export function findAdcFile(env: Pick<Environment, "credentialsFile" | "gcloudConfigDir">): { path: string; fromEnv: boolean } | undefined {
  if (env.credentialsFile) return { path: env.credentialsFile, fromEnv: true };
  if (!env.gcloudConfigDir) return undefined;
  const path = `${env.gcloudConfigDir}/${WELL_KNOWN_FILE}`;
  // node:fs on first use: only -impersonate looks for this file, and loading node:fs costs start-up ~3 ms.
  return (require("node:fs") as typeof import("node:fs")).existsSync(path) ? { path, fromEnv: false } : undefined;
}

/** Read and parse an ADC file; errors name the file and say what is wrong with it. */
export async function readAdcFile(path: string): Promise<AdcFile> {
  let text: string;
  try {
    text = await Bun.file(path).text();
  } catch (e) {
    throw new CredentialError("ADC_UNREADABLE", `${path}: cannot read the credentials file (${unreadableReason(e)})`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CredentialError("ADC_INVALID", `${path}: not JSON (${(e as Error).message}); expected a Google credentials file`, {
      cause: e,
    });
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new CredentialError("ADC_INVALID", `${path}: not a JSON object; expected a Google credentials file`);
  }
  const type = (json as { type?: unknown }).type;
  if (typeof type !== "string" || type === "") {
    throw new CredentialError(
      "ADC_INVALID",
      `${path}: "type" is missing; expected a Google credentials file such as a service account key`,
    );
  }
  return { path, type, json: json as Record<string, unknown> };
}

/** A required non-empty string field of an ADC file. */
export function requireString(adc: AdcFile, field: string): string {
  const v = adc.json[field];
  if (typeof v !== "string" || v === "") {
    throw new CredentialError("ADC_INVALID", `${adc.path}: "${field}" is missing from the ${adc.type} file`);
  }
  return v;
}

/** An optional http(s) URL field of an ADC file. */
export function optionalUrl(adc: AdcFile, field: string): string | undefined {
  const v = adc.json[field];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^https?:\/\/[^/]/.test(v)) {
    throw new CredentialError("ADC_INVALID", `${adc.path}: "${field}" must be an http(s) URL, found ${JSON.stringify(v)}`);
  }
  return v;
}
