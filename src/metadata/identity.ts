/**
 * What a snapshot tells the credential sources: the accounts it serves and the instance facts that `format=full`
 * ID tokens carry. Defined here, where they are compiled, so `credentials/` depends on `metadata/` and not back.
 */

/** A service account as the metadata tree describes it. */
export interface Account {
  /** The account's e-mail address (never the `default` alias). */
  email: string;
  /** Scopes from the config; used when a token request names none. */
  scopes: readonly string[];
}

/** Facts about the emulated VM that `format=full` ID tokens carry in `google.compute_engine`. */
export interface InstanceIdentity {
  projectId: string;
  projectNumber: string;
  instanceId: string;
  instanceName: string;
  zone: string;
  instanceCreationTimestamp: number;
  licenseIds: readonly string[];
}

/** Longest e-mail address (RFC 5321's path limit). */
const MAX_EMAIL = 254;
const LOCAL = /^[A-Za-z0-9._+-]{1,64}$/;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Why `text` cannot be a service account's e-mail, or undefined when it can. Service-account addresses are
 * `name@project.iam.gserviceaccount.com`-like: letters, digits, `.`, `_`, `+`, `-` before the `@`, DNS labels after.
 * Nothing else is accepted: the address becomes a path segment of IAM Credentials calls made with real credentials.
 */
export function accountEmailProblem(text: string): string | undefined {
  const at = text.indexOf("@");
  const problem =
    text.length > MAX_EMAIL
      ? `longer than ${MAX_EMAIL} characters`
      : at <= 0 || at !== text.lastIndexOf("@")
        ? "not of the form name@domain"
        : !LOCAL.test(text.slice(0, at))
          ? "the part before @ may hold only letters, digits, '.', '_', '+' and '-'"
          : !text
                .slice(at + 1)
                .split(".")
                .every((l) => LABEL.test(l))
            ? "the part after @ must be a domain name (letters, digits, '-', dots between labels)"
            : undefined;
  return (
    problem && `${JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text)} is not a service account e-mail address: ${problem}`
  );
}
