/**
 * The metadata listener's transport: TCP (default), a unix socket only (`-domainsocket`), or HTTPS that requires a
 * client certificate signed by a given root (`-usemTLS`). What can be checked before binding is checked here, and
 * every failure is a ListenError that names the file or path and says what to do.
 *
 * @example
 * const tls = await loadTls({ rootCA: "certs/root.crt", serverCert: "certs/server.crt", serverKey: "certs/server.key" });
 * Bun.serve({ port: 8443, tls: { ...tls, requestCert: true, rejectUnauthorized: true }, fetch });
 */
import type { KeyObject, X509Certificate } from "node:crypto";
import type { Server } from "bun";
import { ListenError, UsageError, unreadableReason } from "../errors.ts";

/**
 * Node's crypto, fs and net, loaded on first use: only TLS and unix-socket listeners need them, and importing them
 * up front (with service-account.ts and config/watch.ts) cost the compiled server ~2 ms and ~3 MB of start-up.
 */
const nodeCrypto = () => require("node:crypto") as typeof import("node:crypto");
const nodeFs = () => require("node:fs") as typeof import("node:fs");
const nodeFsPromises = () => require("node:fs/promises") as typeof import("node:fs/promises");
const nodeNet = () => require("node:net") as typeof import("node:net");

/** Files of an mTLS listener, as the Go emulator's `-rootCAmTLS`, `-serverCert`, `-serverKey` name them. */
export interface TlsFiles {
  /** CA (PEM, one or more certificates) that client certificates must chain to. */
  rootCA: string;
  /** Server certificate (PEM); its chain may follow it in the same file. */
  serverCert: string;
  /** Server private key (PEM, unencrypted). */
  serverKey: string;
}

/** PEM texts ready for Bun.serve's `tls`. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
  /** The client CA is one of this repository's test CAs (certs/), whose private keys are public. */
  testCa?: boolean;
}

/**
 * TLS 1.2 suites offered: forward-secret AEAD only (Mozilla's "intermediate" list), so no static-RSA key exchange
 * and no CBC with SHA-1. TLS 1.3 suites are all AEAD and unaffected; TLS 1.0 and 1.1 are refused.
 */
export const TLS12_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** The subjects of the test CAs in certs/ say what they are; a CA file with one is a test CA whatever its path. */
const TEST_CA_SUBJECT = /gce-metadata-server tests \(FAKE\)/;

/**
 * Socket file mode: owner and group may connect (connecting needs write permission on the socket), others not.
 * Clients in the same container or running as the same user connect; to share across users, run the server with a
 * group the clients belong to, or choose 0666 where every local user may have the VM's tokens.
 */
export const DEFAULT_SOCKET_MODE = 0o660;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await nodeFsPromises().readFile(path, "utf8");
  } catch (e) {
    throw new ListenError("TLS_FILE_UNREADABLE", `cannot read the ${what} ${path}: ${unreadableReason(e)}`, { cause: e });
  }
}

function certificates(pem: string, path: string, what: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0)
    throw new ListenError("TLS_FILE_INVALID", `the ${what} ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((b, i) => {
    try {
      return new (nodeCrypto().X509Certificate)(b);
    } catch (e) {
      throw new ListenError("TLS_FILE_INVALID", `the ${what} ${path}: certificate ${i + 1} does not parse (${(e as Error).message})`, {
        cause: e,
      });
    }
  });
}

/** Read and check the three files: each readable and parseable, and the server key belonging to the certificate. */
export async function loadTls(files: TlsFiles): Promise<TlsMaterial> {
  const [ca, cert, key] = await Promise.all([
    readPem(files.rootCA, "client CA certificate (-rootCAmTLS)"),
    readPem(files.serverCert, "server certificate (-serverCert)"),
    readPem(files.serverKey, "server key (-serverKey)"),
  ]);
  const cas = certificates(ca, files.rootCA, "client CA certificate (-rootCAmTLS)");
  const leaf = certificates(cert, files.serverCert, "server certificate (-serverCert)")[0]!;
  let privateKey: KeyObject;
  try {
    privateKey = nodeCrypto().createPrivateKey(key);
  } catch (e) {
    throw new ListenError(
      "TLS_FILE_INVALID",
      `the server key (-serverKey) ${files.serverKey} is not an unencrypted PEM private key (${(e as Error).message})`,
      { cause: e },
    );
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new ListenError(
      "TLS_KEY_MISMATCH",
      `the server key ${files.serverKey} does not belong to the server certificate ${files.serverCert} (${leaf.subject.replace(/\n/g, ", ")}); pass the key the certificate was issued for`,
    );
  }
  return { ca, cert, key, testCa: cas.some((c) => TEST_CA_SUBJECT.test(c.subject)) };
}

/** Resolves true when something accepts connections on the socket, false when the file is a dead socket. */
function answers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = nodeNet().createConnection({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(true); // a listener too busy to accept is still a listener
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(true);
    });
    sock.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === "ECONNREFUSED" || e.code === "ENOENT") resolve(false);
      else reject(e);
    });
  });
}

/**
 * Make `path` free for a new socket: nothing there is fine; a socket nobody answers on (left by a crashed run) is
 * removed; anything else — a regular file, a directory, a socket another server answers on — is refused.
 */
export async function prepareSocket(path: string): Promise<void> {
  let st: import("node:fs").Stats;
  try {
    st = nodeFs().lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new ListenError("SOCKET_PATH", `cannot use ${path} for the unix socket: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isSocket()) {
    const kind = st.isDirectory()
      ? "a directory"
      : st.isFile()
        ? "a regular file"
        : st.isSymbolicLink()
          ? "a symbolic link"
          : "not a socket";
    throw new ListenError(
      "SOCKET_PATH",
      `${path} exists and is ${kind}, not a socket; refusing to remove it. Choose another -domainsocket path or remove it yourself`,
    );
  }
  let live: boolean;
  try {
    live = await answers(path);
  } catch (e) {
    throw new ListenError("SOCKET_PATH", `cannot tell whether a server listens on ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (live) throw new ListenError("SOCKET_IN_USE", `another server is listening on ${path}; stop it or choose another -domainsocket path`);
  try {
    nodeFs().unlinkSync(path);
  } catch (e) {
    throw new ListenError("SOCKET_PATH", `cannot remove the stale socket ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Bind a unix socket with `bind` and give it `mode`. The socket is created owner-only (umask 0177 for the
 * synchronous bind) and then widened, so no client ever sees a wider mode than asked for.
 */
export function bindSocket<T>(path: string, mode: number, bind: () => T): T {
  const old = process.umask(0o177);
  let bound: T;
  try {
    bound = bind();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ListenError("SOCKET_BIND", `cannot listen on the unix socket ${path}: ${code ?? (e as Error).message}`, { cause: e });
  } finally {
    process.umask(old);
  }
  nodeFs().chmodSync(path, mode);
  return bound;
}

export interface ListenTarget {
  hostname: string;
  port: number;
  domainSocket?: string;
  domainSocketMode?: number;
  /** Files already read and checked by loadTls. */
  tls?: TlsMaterial;
  /** Bun's own bound on request bodies: above every route's cap, so the routes answer 413 themselves. */
  maxRequestBodySize?: number;
}

/** `host:port`, `[v6]:port` or `unix:/path`, as `-controlListen` takes them; a UsageError names what is wrong. */
export function parseListenAddress(text: string, flag: string): { hostname: string; port: number } | { unix: string } {
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (!path) throw new UsageError("USAGE", `${flag} ${JSON.stringify(text)}: give the socket's path after unix:`);
    return { unix: path };
  }
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError("USAGE", `${flag} ${JSON.stringify(text)}: use host:port (127.0.0.1:8081, [::1]:8081) or unix:/path/to.sock`);
  }
  const host = m[1]!;
  return { hostname: host.startsWith("[") ? host.slice(1, -1) : host, port };
}

type Fetch = (req: Request, server: Server<unknown>) => Response | Promise<Response>;

/**
 * Serve `fetch` on a unix socket, HTTPS with required client certificates, or plain TCP. No SO_REUSEPORT: a second
 * server on a taken port must fail, not share it.
 */
export async function listen(fetch: Fetch, options: ListenTarget): Promise<Server<unknown>> {
  const { domainSocket } = options;
  if (domainSocket) {
    await prepareSocket(domainSocket);
    return bindSocket(domainSocket, options.domainSocketMode ?? DEFAULT_SOCKET_MODE, () =>
      Bun.serve({
        unix: domainSocket,
        development: false,
        ...(options.maxRequestBodySize ? { maxRequestBodySize: options.maxRequestBodySize } : {}),
        fetch,
      }),
    );
  }
  const tls = options.tls;
  return Bun.serve({
    hostname: options.hostname,
    port: options.port,
    reusePort: false,
    development: false,
    ...(options.maxRequestBodySize ? { maxRequestBodySize: options.maxRequestBodySize } : {}),
    ...(tls
      ? {
          tls: {
            ca: tls.ca,
            cert: tls.cert,
            key: tls.key,
            requestCert: true,
            rejectUnauthorized: true,
            ciphers: TLS12_CIPHERS,
            secureOptions: nodeCrypto().constants.SSL_OP_NO_TLSv1 | nodeCrypto().constants.SSL_OP_NO_TLSv1_1,
          },
        }
      : {}),
    fetch,
  });
}
