#!/usr/bin/env bun
/**
 * gce_metadata_server: the command line, drop-in for salrashid123/gce_metadata_server. Flags and environment
 * variables keep that program's names and defaults; with no credentials it runs the emulated issuer.
 *
 * This file turns flags into options and nothing else; MetadataServer (index.ts) builds the server from them.
 * Only the flag table is loaded before the flags are known, so `-h`, `-version` and a bad flag load nothing more.
 */
import { commandFor } from "./cli/commands.ts";
import { type Flags, parseFlags, usage } from "./cli/flags.ts";
import { MetadataError, UsageError } from "./errors.ts";
import { BUILD_DATE, COMMIT, VERSION } from "./version.ts";
import { printErr, printOut } from "./cli/print.ts";

const LISTEN_ERRORS = new Set(["EADDRINUSE", "EACCES", "EADDRNOTAVAIL"]);

export async function main(argv: string[], env: Record<string, string | undefined> = process.env): Promise<number> {
  const command = commandFor(argv);
  if (command) return (await command())(argv.slice(1), env);
  let flags: Flags;
  try {
    flags = parseFlags(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      printErr(`${e.message}\n${usage()}`);
      return 2;
    }
    throw e;
  }
  if (flags.help) {
    printErr(usage());
    return 0;
  }
  if (flags.version) {
    printOut(`Version: ${VERSION}\nDate: ${BUILD_DATE}\nCommit: ${COMMIT}\n`);
    return 0;
  }

  // Signals are taken from here on, so one that arrives while the server starts still stops it cleanly.
  const signalled = Promise.withResolvers<string>();
  process.once("SIGINT", () => signalled.resolve("SIGINT"));
  process.once("SIGTERM", () => signalled.resolve("SIGTERM"));

  // The Go emulator reads ./config.json by default; without one we serve the bundled VM so a first run just works.
  // With -upstream there is no bundled VM: the upstream's tree is served. The file is looked for while the code loads.
  const defaultFile = flags.upstream || flags.explicit.has("configFile") ? undefined : Bun.file(flags.configFile).exists();
  const [{ createLogger, levelForVerbosity }, { listenerConfig, credentialSpec, serverOptions }, { MetadataServer }] = await Promise.all([
    import("./log.ts"),
    import("./cli/options.ts"),
    import("./index.ts"),
  ]);
  const bundled = defaultFile !== undefined && !(await defaultFile);
  const log = createLogger(levelForVerbosity(flags.v));
  // Lines about flags wait until the server is up: a start-up error is the only line an operator sees.
  const warnings: string[] = [];
  const warn = (line: string) => warnings.push(line);

  let maintenance: import("./events/lifecycle.ts").MaintenanceSpec | undefined;
  let preemption: import("./events/lifecycle.ts").PreemptionSpec | undefined;
  let options: import("./index.ts").MetadataServerOptions;
  try {
    options = { ...serverOptions(flags, env, bundled), serverConfig: listenerConfig(flags, warn) };
    if (flags.simulateMaintenance || flags.simulatePreemption) {
      const { parseMaintenanceSpec, parsePreemptionSpec } = await import("./events/lifecycle.ts");
      if (flags.simulateMaintenance) maintenance = parseMaintenanceSpec(flags.simulateMaintenance);
      if (flags.simulatePreemption) preemption = parsePreemptionSpec(flags.simulatePreemption);
    }
    if (flags.fault.length > 0) {
      const { parseFaultSpec } = await import("./http/faults.ts");
      options.faults = flags.fault.map(parseFaultSpec);
    }
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    printErr(`${e.message}\n`);
    return 2;
  }

  let server: InstanceType<typeof MetadataServer>;
  try {
    options.credentials = credentialSpec(flags, warn);
    options.log = log;
    server = new MetadataServer(options);
    const { url, socketPath } = await server.start();
    // A compiled executable starts with the JIT's thresholds raised (scripts/build.ts START_JIT_POLICY), so that
    // code run once while starting stays interpreted; from the first request on, hot code compiles as usual.
    Bun.unsafe.setJITPolicy(1);
    for (const w of warnings) log.warn(w);
    if (bundled) log.info("no config.json here: serving the bundled default config (project example-project)");
    log.info("metadata server listening", socketPath ? { socket: socketPath, version: VERSION } : { url, version: VERSION });
    if (options.upstream)
      log.info("serving the upstream metadata server's tree", { upstream: options.upstream, overlay: options.configFile ?? "none" });
    if (options.callersFile) log.info("callers loaded", { file: options.callersFile, callers: server.callerNames.join(",") });
    if (server.metricsUrl)
      log.info("metrics listening", { url: `${server.metricsUrl}${flags.metricsPath}`, health: `${server.metricsUrl}/healthz` });
    if (server.controlUrl) log.info("control API listening", { url: `${server.controlUrl}/emulator/v1/`, token: !!flags.controlTokenFile });
    else if (flags.controlAPI)
      log.info("control API enabled", socketPath ? { socket: socketPath, path: "/emulator/v1/" } : { url: `${url}/emulator/v1/` });
    if (options.faults) {
      log.warn("fault injection is on: matching requests fail on purpose", {
        rules: options.faults.length,
        ...(flags.controlAPI ? { list: "GET /emulator/v1/faults" } : {}),
      });
    }
    if (maintenance) server.simulateMaintenance(maintenance);
    if (preemption) server.simulatePreemption(preemption);
  } catch (e) {
    if (e instanceof MetadataError) {
      log.error(e.message);
      return 1;
    }
    const code = (e as { code?: string }).code;
    if (code !== undefined && LISTEN_ERRORS.has(code)) {
      const port = flags.port.startsWith(":") ? flags.port : `:${flags.port}`;
      log.error(`cannot listen on ${flags.interface}${port}: ${(e as Error).message.replace(/, listen$/, "")}`);
      return 1;
    }
    throw e;
  }

  const signal = await signalled.promise;
  log.info("shutting down", { signal });
  return server.stop().then(
    () => 0,
    () => 1,
  );
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      printErr(`fatal: ${(e as Error).stack ?? e}\n`);
      process.exit(70);
    },
  );
}
