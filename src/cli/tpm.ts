/**
 * `-tpm` on the command line: the TPM flags checked by the Go emulator's rules, the key opened (openTpmSigner
 * makes one test signature, so anything that would make signing impossible fails here, before listening), and
 * the TpmSource made for the config's default account.
 */
import { UsageError } from "../errors.ts";
import type { Logger } from "../observability/log.ts";
import { GOOGLE_TOKEN_URL, TpmSource } from "../credentials/tpm.ts";
import type { TpmOptions } from "../tpm/signer.ts";
import { FLAGS, type FlagName, type Flags } from "./flags.ts";

/** Flags that mean something only with -tpm (the Go emulator ignores them otherwise). */
const TPM_ONLY: FlagName[] = [
  "persistentHandle",
  "keyfile",
  "tpm-path",
  "parentPass",
  "keyPass",
  "pcrs",
  "tpm-session-encrypt-with-name",
  "useOauthToken",
  "useEKParent",
  "tokenURL",
];

/** Why -useTPMmTLS is refused; see docs/tpm.md for what was tried. */
export const TPM_MTLS_UNSUPPORTED =
  "-useTPMmTLS is not supported: Bun's TLS (BoringSSL) takes a client private key only as PEM/DER in memory and has no hook to sign the handshake inside a TPM (no sign callback; OpenSSL engines and providers are unavailable), and exporting the key would defeat the TPM; use -tpm without it (self-signed JWT access tokens, or -useOauthToken)";

/** `-pcrs 0,7,23` → [0, 7, 23]: SHA-256 PCR indices 0–23, sorted, without repeats. */
export function parsePcrs(text: string): number[] {
  const out = new Set<number>();
  for (const raw of text.split(",")) {
    const item = raw.trim();
    if (!/^\d{1,2}$/.test(item) || Number(item) > 23) {
      throw new UsageError(
        "BAD_PCRS",
        `-pcrs ${JSON.stringify(text)}: ${item === "" ? "an empty entry" : JSON.stringify(item)} is not a PCR index 0-23; write the PCRs the key is bound to as a comma-separated list, e.g. -pcrs 0,7,23`,
      );
    }
    out.add(Number(item));
  }
  return [...out].sort((a, b) => a - b);
}

function given(flags: Flags, name: FlagName): boolean {
  return flags.explicit.has(name) && flags[name] !== FLAGS[name].default;
}

/** Warnings for TPM flags given without -tpm, and refusal of -useTPMmTLS; call before any credential is made. */
export function checkTpmFlags(flags: Flags, log: Logger): void {
  if (flags.useTPMmTLS) {
    // The Go emulator needs these with it (projectNumber defaults to the config's numeric project id).
    const missing = (["poolID", "providerID", "pubCert"] as const).filter((n) => flags[n] === "").map((n) => `-${n}`);
    const note = missing.length ? ` (it would also need ${missing.join(", ")}, as in the Go emulator)` : "";
    throw new UsageError("TPM_MTLS_UNSUPPORTED", TPM_MTLS_UNSUPPORTED + note);
  }
  if (!flags.tpm) {
    // -impersonate uses -tokenURL too (for source credentials whose file names no token endpoint).
    const ignored = TPM_ONLY.filter((n) => given(flags, n) && !(n === "tokenURL" && flags.impersonate)).map((n) => `-${n}`);
    const also = ignored.includes("-tokenURL") ? " (-tokenURL also with -impersonate)" : "";
    if (ignored.length)
      log.warn(`${ignored.join(", ")} ignored: ${ignored.length > 1 ? "they apply" : "it applies"} only with -tpm${also}`);
  }
}

/** The signer options the flags describe; a UsageError (exit 1) for what the Go emulator refuses. */
export function tpmOptions(flags: Flags, log: Logger): TpmOptions {
  const keyfile = flags.keyfile !== "" ? flags.keyfile : undefined;
  const handle = flags.persistentHandle > 0 ? flags.persistentHandle : undefined;
  if (keyfile === undefined && handle === undefined) {
    throw new UsageError(
      "TPM_NO_KEY",
      "-tpm needs -persistentHandle (e.g. 0x81010002) or -keyfile (a TSS2 PRIVATE KEY PEM): must specify either a persistent handle or a keyfile for use with a TPM",
    );
  }
  if (keyfile !== undefined && handle !== undefined) {
    log.warn("both -keyfile and -persistentHandle given: using -keyfile, as the Go emulator does");
  }
  return {
    path: flags["tpm-path"],
    ...(keyfile !== undefined ? { keyfile } : { persistentHandle: handle! }),
    ...(flags.parentPass !== "" ? { parentPass: flags.parentPass } : {}),
    ...(flags.keyPass !== "" ? { keyPass: flags.keyPass } : {}),
    ...(flags.pcrs !== "" ? { pcrs: parsePcrs(flags.pcrs) } : {}),
    ...(flags["tpm-session-encrypt-with-name"] !== "" ? { sessionEncryptWithName: flags["tpm-session-encrypt-with-name"] } : {}),
    ...(flags.useEKParent ? { useEKParent: true } : {}),
  };
}

function tokenUrl(flags: Flags): string {
  const text = flags.tokenURL;
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    throw new UsageError("BAD_TOKEN_URL", `-tokenURL ${JSON.stringify(text)} is not an http(s) URL; the default is ${GOOGLE_TOKEN_URL}`);
  }
  return text;
}

/**
 * Open the TPM key and make the source for `email` (the config's default account). Throws TpmError/UsageError.
 * `timeoutMs` is the deadline of each TPM call and of each token-endpoint exchange.
 */
export async function openTpmSource(flags: Flags, email: string, log: Logger, options: { timeoutMs?: number } = {}): Promise<TpmSource> {
  const timeout = options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {};
  const opts = { ...tpmOptions(flags, log), ...timeout };
  const url = tokenUrl(flags);
  const { openTpmSigner } = await import("../tpm/signer.ts");
  const signer = await openTpmSigner(opts);
  log.info("using a TPM key for credentials", {
    email,
    tpm: opts.path,
    key: opts.keyfile ?? `0x${opts.persistentHandle!.toString(16).padStart(8, "0")}`,
    fingerprint: signer.fingerprint,
    tokens: flags.useOauthToken ? "oauth2 jwt-bearer exchange" : "self-signed JWT access tokens",
    ...(flags.useOauthToken || url !== GOOGLE_TOKEN_URL ? { tokenURL: url } : {}),
  });
  return new TpmSource({ signer, email, tokenUrl: url, useOauthToken: flags.useOauthToken, ...timeout });
}
