/**
 * Flags to options: what the command line asks for, as the library's {@link MetadataServerOptions}. Nothing is
 * opened or read here (the server does that when it starts); flag values are checked, and each problem is a
 * UsageError. Warnings about flags that do nothing are returned, to be logged once the server is up.
 */
import { parsePort } from "../address.ts";
import { tokenLifetimeMs } from "../credentials/lifetime.ts";
import { parseListenAddress } from "../http/listen.ts";
import type { CredentialSpec } from "../credentials/open.ts";
import { parseDuration } from "../duration.ts";
import { UsageError } from "../errors.ts";
import { metadataBaseUrl } from "../metadata/client.ts";
import type { MetadataServerOptions, ServerConfig } from "../index.ts";
import { FLAGS, type FlagName, type Flags } from "./flags.ts";
import { checkTpmFlags, tpmOptions } from "./tpm.ts";

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

/** Credential flags in the Go emulator's order of precedence: the first one set wins. */
const CREDENTIAL_FLAGS = ["impersonate", "federate", "tpm", "serviceAccountFile"] as const;

/** A flag's value as an http(s) URL, or a UsageError naming the flag and its default. */
export function httpUrlFlag(name: FlagName, text: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    throw new UsageError("BAD_URL", `-${name} ${JSON.stringify(text)} is not an http(s) URL; the default is ${FLAGS[name].default}`);
  }
  return text;
}

/** The listeners the flags ask for; a UsageError (exit 2) for a value that cannot be one. */
export function listenerConfig(flags: Flags, warn: (line: string) => void): ServerConfig {
  const config: ServerConfig = { bindInterface: flags.interface, port: flags.port };
  parsePort(flags.port);
  if (flags.domainsocket) {
    if (flags.usemTLS) {
      throw new UsageError(
        "USAGE",
        "-domainsocket and -usemTLS cannot be combined: the socket serves plain HTTP (as in the Go emulator); drop one",
      );
    }
    if (!/^0?[0-7]{3}$/.test(flags.domainsocketMode)) {
      throw new UsageError(
        "USAGE",
        `invalid -domainsocketMode ${JSON.stringify(flags.domainsocketMode)}: use an octal mode such as 0660 or 0666`,
      );
    }
    config.domainSocket = flags.domainsocket;
    config.domainSocketMode = parseInt(flags.domainsocketMode, 8);
    if (flags.explicit.has("interface") || flags.explicit.has("port")) {
      warn("-interface and -port are ignored with -domainsocket: the server listens on the unix socket only");
    }
  }
  if (flags.usemTLS) config.tls = { rootCA: flags.rootCAmTLS, serverCert: flags.serverCert, serverKey: flags.serverKey };
  if (flags.metricsEnabled) {
    if (!flags.metricsPath.startsWith("/"))
      throw new UsageError("USAGE", `invalid -metricsPath ${JSON.stringify(flags.metricsPath)}: it must start with /`);
    parsePort(flags.metricsPort, "-metricsPort");
    config.metrics = { bindInterface: flags.metricsInterface, port: flags.metricsPort, path: flags.metricsPath };
  }
  for (const [flag, needs] of IGNORED_WITHOUT) {
    if (flags.explicit.has(flag) && !flags[needs]) warn(`-${flag} is ignored without -${needs}`);
  }
  for (const flag of ["controlTokenFile", "maxControlBodyBytes"] as const) {
    if (flags.explicit.has(flag) && !flags.controlAPI && !flags.controlListen)
      warn(`-${flag} is ignored without -controlAPI or -controlListen`);
  }
  return config;
}

/** The credential mode the flags choose, in the Go emulator's precedence; a UsageError (exit 1) for a bad value. */
export function credentialSpec(flags: Flags, warn: (line: string) => void): CredentialSpec {
  checkTpmFlags(flags, warn);
  const set = CREDENTIAL_FLAGS.filter((n) => flags[n]);
  if (set.length > 1) {
    warn(
      `${set
        .slice(1)
        .map((n) => `-${n}`)
        .join(", ")} ignored: -${set[0]} takes precedence, as in the Go emulator`,
    );
  }
  if (!flags.impersonate && !flags.federate && flags.explicit.has("iamURL")) warn("-iamURL is ignored without -impersonate or -federate");
  if (flags.impersonate)
    return { type: "impersonated", iamUrl: httpUrlFlag("iamURL", flags.iamURL), tokenUrl: httpUrlFlag("tokenURL", flags.tokenURL) };
  // -federate without -iamURL mints ID tokens where the file's service_account_impersonation_url points.
  if (flags.federate)
    return { type: "federated", ...(flags.explicit.has("iamURL") ? { iamUrl: httpUrlFlag("iamURL", flags.iamURL) } : {}) };
  if (flags.tpm) {
    return {
      type: "tpm",
      tpm: tpmOptions(flags, warn),
      tokenUrl: httpUrlFlag("tokenURL", flags.tokenURL),
      useOauthToken: flags.useOauthToken,
    };
  }
  if (flags.serviceAccountFile) return { type: "serviceAccountKey", keyFile: flags.serviceAccountFile };
  // With -upstream, tokens come from it unless the emulated issuer is asked for by name.
  if (flags.upstream && !flags.explicit.has("issuer") && !flags.explicit.has("issuerKey")) {
    return { type: "upstream", url: metadataBaseUrl(flags.upstream, "-upstream") };
  }
  return { type: "emulated", issuer: flags.issuer, ...(flags.issuerKey ? { keyFile: flags.issuerKey } : {}) };
}

/** `-upstreamTimeout` in milliseconds: a Go duration above 0 and at most 4 minutes. */
function upstreamTimeout(text: string): number {
  const ms = parseDuration(text);
  if (!(ms >= 1 && ms <= 240_000)) {
    throw new UsageError("BAD_DURATION", `invalid -upstreamTimeout ${JSON.stringify(text)}: use a Go duration from 1ms to 4m, such as 10s`);
  }
  return ms;
}

/**
 * Everything but the listener and credentials; `bundled` serves the config built into the program. With
 * `-upstream` the upstream's tree is served, and a config file is read (as an overlay) only when named.
 */
export function serverOptions(flags: Flags, env: Record<string, string | undefined>, bundled: boolean): MetadataServerOptions {
  for (const name of ["maxControlBodyBytes", "maxGuestValueBytes", "maxGuestKeys", "maxGuestNamespaces", "maxGuestBytes"] as const) {
    if (flags[name] < 1) throw new UsageError("USAGE", `invalid -${name} ${flags[name]}: it must be at least 1`);
  }
  if (flags.maxWaiters < -1)
    throw new UsageError("USAGE", `invalid -maxWaiters ${flags.maxWaiters}: use -1 (the default rule), 0 (no limit) or a count`);
  const options: MetadataServerOptions = {
    env,
    // A VM may run without a service account; the Go emulator's rule is for hand-written configs.
    requireDefaultAccount: !flags.upstream,
    controlApi: flags.controlAPI,
    upstreamTimeoutMs: upstreamTimeout(flags.upstreamTimeout),
    watchConfig: flags.watchConfig,
    legacyHeader: flags.legacyHeader,
    maxControlBodyBytes: flags.maxControlBodyBytes,
    guestAttributeLimits: {
      maxValueBytes: flags.maxGuestValueBytes,
      maxKeys: flags.maxGuestKeys,
      maxNamespaces: flags.maxGuestNamespaces,
      maxTotalBytes: flags.maxGuestBytes,
    },
  };
  if (flags.maxWaiters >= 0) options.maxWaiters = flags.maxWaiters;
  if (flags.controlListen) {
    parseListenAddress(flags.controlListen, "-controlListen");
    options.controlListen = flags.controlListen;
  }
  if (flags.controlTokenFile) options.controlTokenFile = flags.controlTokenFile;
  if (flags.explicit.has("tokenLifetime")) options.tokenLifetime = tokenLifetimeMs(flags.tokenLifetime);
  if (flags.upstream) {
    options.upstream = metadataBaseUrl(flags.upstream, "-upstream");
    if (flags.explicit.has("configFile")) options.configFile = flags.configFile;
  } else if (!bundled) {
    options.configFile = flags.configFile;
  }
  if (flags.callers) options.callersFile = flags.callers;
  return options;
}
