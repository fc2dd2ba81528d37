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
