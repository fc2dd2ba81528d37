/** Start a MetadataServer on a free port for a test file, and a small client for it. */
import { MetadataServer, type MetadataServerOptions } from "../../src/index.ts";

export const FLAVOR = { "Metadata-Flavor": "Google" } as const;
export const V1 = "/computeMetadata/v1/";

export interface Started {
  server: MetadataServer;
  base: string;
  /** GET with Metadata-Flavor by default; never follows redirects. */
  get(path: string, headers?: Record<string, string>): Promise<Response>;
  stop(): Promise<void>;
}

export async function startServer(options: MetadataServerOptions = {}): Promise<Started> {
  const server = new MetadataServer({ ...options, serverConfig: { port: 0, ...options.serverConfig } });
  const { url } = await server.start();
  return {
    server,
    base: url,
    get: (path, headers = FLAVOR) => fetch(url + path, { headers, redirect: "manual" }),
    stop: () => server.stop(),
  };
}

/** Send raw bytes and read the raw HTTP response (for requests fetch cannot make, e.g. without Host). */
export async function rawRequest(port: number, text: string): Promise<string> {
  const chunks: Uint8Array[] = [];
  const { promise, resolve } = Promise.withResolvers<string>();
  await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      open(s) {
        s.write(text);
      },
      data(_s, d) {
        chunks.push(d);
      },
      close() {
        resolve(Buffer.concat(chunks).toString("utf8"));
      },
      error() {
        resolve(Buffer.concat(chunks).toString("utf8"));
      },
    },
  });
  return promise;
}

/**
 * Open `n` sockets at once and send one GET on each; resolves with each status line and body. Unlike fetch, whose
 * client caps connections per process, this really puts `n` requests in flight together.
 */
export async function concurrentGets(
  port: number,
  path: string,
  n: number,
  headers: Record<string, string> = FLAVOR,
): Promise<{ status: number; body: string }[]> {
  const head = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("");
  const request = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${head}Connection: close\r\n\r\n`;
  const one = async () => {
    const raw = await rawRequest(port, request);
    const status = Number(raw.slice(9, 12));
    return { status, body: raw.slice(raw.indexOf("\r\n\r\n") + 4) };
  };
  return Promise.all(Array.from({ length: n }, one));
}
