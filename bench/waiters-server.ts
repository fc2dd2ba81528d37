/**
 * The server side of bench/waiters.ts, run as its own process so its memory is measured alone: a MetadataServer on
 * 127.0.0.1 with the control API and config watching on. Prints `READY <port>` when listening; stops on SIGTERM.
 */
import { MetadataServer } from "../src/index.ts";

const configFile = process.argv[2];
if (!configFile) throw new Error("usage: bun bench/waiters-server.ts <config.json>");
const server = new MetadataServer({
  serverConfig: { bindInterface: "127.0.0.1", port: 0 },
  configFile,
  watchConfig: true,
  controlApi: true,
});
const { port } = await server.start();
process.stdout.write(`READY ${port}\n`);
process.once("SIGTERM", () => {
  void server.stop().then(() => process.exit(0));
});
