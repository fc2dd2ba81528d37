/**
 * The server side of bench/guest-writes.ts, in its own process so the client's load does not share its event loop:
 * the bundled VM with guest attributes on and limits raised for the run. Prints `READY <port>`; stops on SIGTERM.
 */
import { MetadataServer } from "../src/index.ts";

const claims = JSON.parse(await Bun.file(new URL("../config.json", import.meta.url)).text());
claims.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = "TRUE";
const server = new MetadataServer({
  serverConfig: { bindInterface: "127.0.0.1", port: 0 },
  claims,
  // Raised so one namespace can hold every key of the run (older builds ignore the option).
  guestAttributeLimits: { maxKeys: 100_000, maxNamespaces: 1_000, maxTotalBytes: 1 << 30 },
} as ConstructorParameters<typeof MetadataServer>[0]);
const { port } = await server.start();
process.stdout.write(`READY ${port}\n`);
process.once("SIGTERM", () => {
  void server.stop().then(() => process.exit(0));
});
