#!/usr/bin/env bun
/**
 * gce_metadata_server: the command line, drop-in for salrashid123/gce_metadata_server. Flags and environment
 * variables keep that program's names and defaults; with no credentials it runs the emulated issuer.
 */
import { commandFor } from "./cli/commands.ts";
import { parseFlags, usage, type FlagName, type Flags } from "./cli/flags.ts";
import { ConfigError, CredentialError, MetadataError, UsageError } from "./errors.ts";
import { createLogger, levelForVerbosity, type Logger } from "./observability/log.ts";
import { DEFAULT_CONFIG_TEXT, MetadataServer, type MetadataServerOptions, type ServerConfig } from "./index.ts";
import { claimsFromDocument, loadClaims, parseConfigText } from "./config/claims.ts";
import { Snapshot } from "./metadata/snapshot.ts";
import type { CredentialSource } from "./credentials/source.ts";
import { EmulatedIssuer } from "./credentials/emulated.ts";
import { overlayStatic } from "./credentials/static.ts";
import { checkTpmFlags, openTpmSource } from "./cli/tpm.ts";
import { VERSION, BUILD_DATE, COMMIT } from "./version.ts";
import { parseMaintenanceSpec, parsePreemptionSpec, type MaintenanceSpec, type PreemptionSpec } from "./changes/lifecycle.ts";

/** Flags that only mean something beside another one. */
const IGNORED_WITHOUT: Array<[FlagName, "usemTLS" | "metricsEnabled" | "domainsocket"]> = [
  ["rootCAmTLS", "usemTLS"],
  ["serverCert", "usemTLS"],
  ["serverKey", "usemTLS"],
  ["metricsInterface", "metricsEnabled"],
  ["metricsPort", "metricsEnabled"],
  ["metricsPath", "metricsEnabled"],
  ["domainsocketMode", "domainsocket"],
];

/** The listeners the flags ask for, or a usage message. */
function listenerConfig(flags: Flags): ServerConfig | string {
  const config: ServerConfig = { bindInterface: flags.interface, port: flags.port };
  if (flags.domainsocket) {
    if (flags.usemTLS)
      return "-domainsocket and -usemTLS cannot be combined: the socket serves plain HTTP (as in the Go emulator); drop one";
    if (!/^0?[0-7]{3}$/.test(flags.domainsocketMode))
      return `invalid -domainsocketMode ${JSON.stringify(flags.domainsocketMode)}: use an octal mode such as 0660 or 0666`;
    config.domainSocket = flags.domainsocket;
    config.domainSocketMode = parseInt(flags.domainsocketMode, 8);
  }
  if (flags.usemTLS) config.tls = { rootCA: flags.rootCAmTLS, serverCert: flags.serverCert, serverKey: flags.serverKey };
  if (flags.metricsEnabled) {
    if (!flags.metricsPath.startsWith("/")) return `invalid -metricsPath ${JSON.stringify(flags.metricsPath)}: it must start with /`;
    config.metrics = { bindInterface: flags.metricsInterface, port: flags.metricsPort, path: flags.metricsPath };
  }
  return config;
}

/** The config's default account e-mail as it will be served (environment overrides applied). */
async function defaultEmail(options: MetadataServerOptions): Promise<string> {
  const o = { env: options.env ?? {}, requireDefaultAccount: true };
  const tree = options.configFile !== undefined ? await loadClaims(options.configFile, o) : claimsFromDocument(options.claims!, o);
  return new Snapshot(tree).accounts.get("default")!.email;
}

/** Credential flags in the Go emulator's order of precedence: the first one set wins. */
const CREDENTIAL_FLAGS = ["impersonate", "federate", "tpm", "serviceAccountFile"] as const;

async function credentialSource(flags: Flags, log: Logger, options: MetadataServerOptions): Promise<CredentialSource> {
  const set = CREDENTIAL_FLAGS.filter((n) => flags[n]);
  if (set.length > 1)
    log.warn(
      `${set
        .slice(1)
        .map((n) => `-${n}`)
        .join(", ")} ignored: -${set[0]} takes precedence, as in the Go emulator`,
    );
  if (!flags.impersonate && !flags.federate && flags.explicit.has("iamURL"))
    log.warn("-iamURL is ignored without -impersonate or -federate");
  const env = options.env ?? {};
  if (flags.impersonate) return (await import("./cli/adc.ts")).openImpersonatedSource(flags, env, log);
  if (flags.federate) return (await import("./cli/adc.ts")).openFederatedSource(flags, env, log);
  if (flags.tpm) {
    // The key belongs to the config's default account, as in the Go emulator.
    return openTpmSource(flags, await defaultEmail(options), log);
  }
  if (flags.serviceAccountFile) {
    const { readServiceAccountKey, ServiceAccountKeySource } = await import("./credentials/service-account.ts");
    const key = await readServiceAccountKey(flags.serviceAccountFile);
    log.info("using service account key file for credentials", { email: key.client_email, token_uri: key.token_uri });
    return new ServiceAccountKeySource(key);
  }
  log.warn("no credentials given: using the emulated issuer; its tokens are minted locally and are not valid at Google");
  const issuer = new EmulatedIssuer({ issuer: flags.issuer, ...(flags.issuerKey ? { keyFile: flags.issuerKey } : {}) });
  // A named key file is read now, so a bad one stops start-up instead of the first ID token request.
  if (flags.issuerKey) await issuer.openid.jwks();
  return issuer;
}

export async function main(argv: string[], env: Record<string, string | undefined> = process.env): Promise<number> {
  const command = commandFor(argv);
  if (command) return (await command())(argv.slice(1), env);
  let flags: Flags;
  try {
    flags = parseFlags(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n${usage()}`);
      return 2;
    }
    throw e;
  }
  if (flags.help) {
    process.stderr.write(usage());
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`Version: ${VERSION}\nDate: ${BUILD_DATE}\nCommit: ${COMMIT}\n`);
    return 0;
  }
  const listener = listenerConfig(flags);
  if (typeof listener === "string") {
    process.stderr.write(`${listener}\n`);
    return 2;
  }
  let maintenance: MaintenanceSpec | undefined;
  let preemption: PreemptionSpec | undefined;
  try {
    if (flags.simulateMaintenance) maintenance = parseMaintenanceSpec(flags.simulateMaintenance);
    if (flags.simulatePreemption) preemption = parsePreemptionSpec(flags.simulatePreemption);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message}\n`);
    return 2;
  }
  const log = createLogger(levelForVerbosity(flags.v));
  for (const [flag, needs] of IGNORED_WITHOUT) {
    if (flags.explicit.has(flag) && !flags[needs]) log.warn(`-${flag} is ignored without -${needs}`);
  }
  if (flags.domainsocket && (flags.explicit.has("interface") || flags.explicit.has("port"))) {
    log.warn("-interface and -port are ignored with -domainsocket: the server listens on the unix socket only");
  }

  let server: MetadataServer;
  let base: CredentialSource | undefined;
  try {
    checkTpmFlags(flags, log);
    const options: MetadataServerOptions = {
      serverConfig: listener,
      env,
      requireDefaultAccount: true,
      log,
      controlApi: flags.controlAPI,
      maxWaiters: flags.maxWaiters,
    };
    // The Go emulator reads ./config.json by default; without one we serve the bundled VM so a first run just works.
    if (!flags.explicit.has("configFile") && !(await Bun.file(flags.configFile).exists())) {
      log.info("no config.json here: serving the bundled default config (project example-project)");
      options.claims = parseConfigText(DEFAULT_CONFIG_TEXT, "default config") as object;
    } else {
      options.configFile = flags.configFile;
      options.watchConfig = flags.watchConfig;
    }
    base = await credentialSource(flags, log, options);
    options.credentials = overlayStatic({ accessToken: env.GOOGLE_ACCESS_TOKEN, idToken: env.GOOGLE_ID_TOKEN }, base);
    if (env.GOOGLE_ACCESS_TOKEN || env.GOOGLE_ID_TOKEN) log.info("serving static tokens from GOOGLE_ACCESS_TOKEN / GOOGLE_ID_TOKEN");
    server = new MetadataServer(options);
    const { url, socketPath } = await server.start();
    log.info("metadata server listening", socketPath ? { socket: socketPath, version: VERSION } : { url, version: VERSION });
    if (server.metricsUrl)
      log.info("metrics listening", { url: `${server.metricsUrl}${flags.metricsPath}`, health: `${server.metricsUrl}/healthz` });
    if (flags.controlAPI)
      log.info("control API enabled", socketPath ? { socket: socketPath, path: "/emulator/v1/" } : { url: `${url}/emulator/v1/` });
    if (maintenance) server.simulateMaintenance(maintenance);
    if (preemption) server.simulatePreemption(preemption);
  } catch (e) {
    await base?.close?.(); // release the TPM key and sessions
    if (e instanceof ConfigError || e instanceof CredentialError || e instanceof MetadataError) {
      log.error(e.message);
      return 1;
    }
    const code = (e as { code?: string }).code;
    if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") {
      log.error(
        `cannot listen on ${flags.interface}${flags.port.startsWith(":") ? flags.port : `:${flags.port}`}: ${(e as Error).message}`,
      );
      return 1;
    }
    if (e instanceof RangeError) {
      log.error(e.message);
      return 2;
    }
    throw e;
  }

  return await new Promise<number>((resolve) => {
    const shutdown = (signal: string) => {
      log.info("shutting down", { signal });
      server.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once("SIGINT", () => shutdown("SIGINT"));
    process.once("SIGTERM", () => shutdown("SIGTERM"));
  });
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`fatal: ${(e as Error).stack ?? e}\n`);
      process.exit(70);
    },
  );
}
