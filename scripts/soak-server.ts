/**
 * The server side of `npm run soak`, in its own process: a MetadataServer watching a config file, with the control
 * API and guest attributes on. Prints `READY <port>`, then every second `STATS <rss bytes> <loop delay p99 ms>
 * <loop delay max ms>` (event-loop delay from perf_hooks, reset after each line). Stops on SIGTERM.
 *
 * Usage: bun scripts/soak-server.ts <config.json>
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import { MetadataServer } from "../src/index.ts";
import { createLogger } from "../src/log.ts";

const configFile = process.argv[2];
if (!configFile) throw new Error("usage: bun scripts/soak-server.ts <config.json>");
const server = new MetadataServer({
  serverConfig: { port: 0 },
  configFile,
  watchConfig: true,
  controlApi: true,
  // Warnings and errors only: a soak must not measure its own logging.
  log: createLogger("warn"),
});
const { port } = await server.start();
process.stdout.write(`READY ${port}\n`);

const delay = monitorEventLoopDelay({ resolution: 10 });
delay.enable();
setInterval(() => {
  const p99 = delay.percentile(99) / 1e6;
  const max = delay.max / 1e6;
  delay.reset();
  process.stdout.write(`STATS ${process.memoryUsage().rss} ${p99.toFixed(2)} ${max.toFixed(2)}\n`);
}, 1000);

process.once("SIGTERM", () => {
  void server.stop().then(() => process.exit(0));
});
