/**
 * `-tpm` on the command line: the TPM flags checked by the Go emulator's rules and turned into the signer's
 * options. The server opens the key when it starts (credentials/open.ts).
 */
import { UsageError } from "../errors.ts";
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
export function checkTpmFlags(flags: Flags, warn: (line: string) => void): void {
  if (flags.useTPMmTLS) {
    // The Go emulator needs these with it (projectNumber defaults to the config's numeric project id).
    const missing = (["poolID", "providerID", "pubCert"] as const).filter((n) => flags[n] === "").map((n) => `-${n}`);
    const note = missing.length ? ` (it would also need ${missing.join(", ")}, as in the Go emulator)` : "";
    throw new UsageError("TPM_MTLS_UNSUPPORTED", TPM_MTLS_UNSUPPORTED + note);
  }
  if (!flags.tpm) {
    const ignored = TPM_ONLY.filter((n) => given(flags, n)).map((n) => `-${n}`);
    if (ignored.length) warn(`${ignored.join(", ")} ignored: ${ignored.length > 1 ? "they apply" : "it applies"} only with -tpm`);
    // -impersonate uses -tokenURL too (for source credentials whose file names no token endpoint).
    if (given(flags, "tokenURL") && !flags.impersonate) warn("-tokenURL is ignored without -tpm or -impersonate");
  }
}

/** The signer options the flags describe; a UsageError (exit 1) for what the Go emulator refuses. */
export function tpmOptions(flags: Flags, warn: (line: string) => void): TpmOptions {
  const keyfile = flags.keyfile !== "" ? flags.keyfile : undefined;
  const handle = flags.persistentHandle > 0 ? flags.persistentHandle : undefined;
  if (keyfile === undefined && handle === undefined) {
    throw new UsageError(
      "TPM_NO_KEY",
      "-tpm needs -persistentHandle (e.g. 0x81010002) or -keyfile (a TSS2 PRIVATE KEY PEM): must specify either a persistent handle or a keyfile for use with a TPM",
    );
  }
  if (keyfile !== undefined && handle !== undefined) {
    warn("both -keyfile and -persistentHandle given: using -keyfile, as the Go emulator does");
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
