/**
 * The server the fuzzers attack, in its own process so a crash shows as an exit: the bundled VM with guest
 * attributes on, the control API, metrics, and per-request logging into a sink that keeps only errors (written to
 * stderr, where the fuzzer counts them). Prints `READY <port>`; stops on SIGTERM.
 *
 * Usage: bun test/fuzz/fuzz-server.ts [config.json to watch]
 */
import { readFileSync } from "node:fs";
import { MetadataServer } from "../../src/index.ts";
import { createLogger } from "../../src/log.ts";

const configFile = process.argv[2];
const claims = JSON.parse(readFileSync(new URL("../../config.json", import.meta.url), "utf8"));
claims.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = "TRUE";
const log = createLogger("debug", (line) => {
  if (!/ (DEBUG|INFO) /.test(line)) process.stderr.write(line);
});
const server = new MetadataServer({
  serverConfig: { port: 0, metrics: { port: 0 } },
  ...(configFile ? { configFile, watchConfig: true } : { claims }),
  controlApi: true,
  log,
});
const { port } = await server.start();
process.stdout.write(`READY ${port}\n`);
process.once("SIGTERM", () => {
  void server.stop().then(() => process.exit(0));
});
