/**
 * The environment variables this server reads, read here and nowhere else: the Go emulator's overrides and static
 * tokens, and where Application Default Credentials are looked for. Everything else takes an {@link Environment}.
 *
 * @example
 * const env = readEnvironment(process.env);
 * env.projectId; // GOOGLE_PROJECT_ID
 */
export interface Environment {
  /** `GOOGLE_PROJECT_ID`: served as `project/project-id`. */
  projectId?: string;
  /** `GOOGLE_NUMERIC_PROJECT_ID`: served as `project/numeric-project-id`. */
  numericProjectId?: string;
  /** `GOOGLE_SERVICE_ACCOUNT` (or `GOOGLE_ACCOUNT_EMAIL`): the default account's e-mail. */
  serviceAccount?: string;
  /** `GOOGLE_ACCESS_TOKEN`: a static access token for every `token` request. */
  accessToken?: string;
  /** `GOOGLE_ID_TOKEN`: a static ID token for every `identity` request. */
  idToken?: string;
  /** `GOOGLE_APPLICATION_CREDENTIALS`: the ADC file for `-impersonate` and `-federate`. */
  credentialsFile?: string;
  /** gcloud's config directory, where its ADC file lives: `CLOUDSDK_CONFIG`, else from `HOME` (`APPDATA` on Windows). */
  gcloudConfigDir?: string;
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v === "" ? undefined : v);

/** The variables that matter here, from a process environment; empty values count as unset. */
export function readEnvironment(env: Record<string, string | undefined>, platform: string = process.platform): Environment {
  const out: Environment = {};
  const set = <K extends keyof Environment>(key: K, value: string | undefined) => {
    if (value !== undefined) out[key] = value;
  };
  set("projectId", nonEmpty(env.GOOGLE_PROJECT_ID));
  set("numericProjectId", nonEmpty(env.GOOGLE_NUMERIC_PROJECT_ID));
  set("serviceAccount", nonEmpty(env.GOOGLE_SERVICE_ACCOUNT) ?? nonEmpty(env.GOOGLE_ACCOUNT_EMAIL));
  set("accessToken", nonEmpty(env.GOOGLE_ACCESS_TOKEN));
  set("idToken", nonEmpty(env.GOOGLE_ID_TOKEN));
  set("credentialsFile", nonEmpty(env.GOOGLE_APPLICATION_CREDENTIALS));
  set("gcloudConfigDir", gcloudConfigDir(env, platform));
  return out;
}

/** gcloud's config directory as google-auth-library computes it; undefined when it cannot be named. */
function gcloudConfigDir(env: Record<string, string | undefined>, platform: string): string | undefined {
  if (env.CLOUDSDK_CONFIG) return env.CLOUDSDK_CONFIG;
  // Joined by hand: node:path is not worth its start-up cost for two joins.
  if (platform === "win32") return env.APPDATA ? `${env.APPDATA.replace(/\\+$/, "")}\\gcloud` : undefined;
  return env.HOME ? `${env.HOME.replace(/\/+$/, "")}/.config/gcloud` : undefined;
}
