/**
 * A TCP front for a local upstream (the fake Google) that misbehaves on command, for the faults that happen below
 * HTTP: a port that refuses connections, a connection reset as the request arrives, a server that accepts and never
 * answers, and one that sends its headers and then stalls the body. `pass` forwards bytes both ways untouched.
 * HTTP-level faults (429 with Retry-After, 500, 503, malformed JSON, a wrongly signed token) are the fake's own
 * (`failNext`, `signWithWrongKey`).
 *
 * @example
 * ```ts
 * const front = await startFaultyFront(fake.url);   // point the source at front.url instead of fake.url
 * await front.set("hang");                          // new connections are accepted and never answered
 * await front.set("pass");                          // recovered
 * ```
 */
import type { Socket, TCPSocketListener } from "bun";

export type TransportFault = "pass" | "refuse" | "reset" | "hang" | "stall-body";

export interface FaultyFront {
  /** `http://127.0.0.1:<port>`: the same paths as the target. */
  readonly url: string;
  readonly port: number;
  /** Connections accepted since start. */
  readonly accepted: number;
  /** Misbehave from now on: existing connections are cut, so a pooled connection cannot bypass the fault. */
  set(fault: TransportFault): Promise<void>;
  stop(): Promise<void>;
}

interface Conn {
  fault: TransportFault;
  upstream?: Socket<undefined>;
  pending: Uint8Array[];
  stalled?: boolean;
}

/** Start the front on 127.0.0.1 with a free port, forwarding to `target` (`http://127.0.0.1:<port>`). */
export async function startFaultyFront(target: string): Promise<FaultyFront> {
  const to = new URL(target);
  let fault: TransportFault = "pass";
  let accepted = 0;
  const open = new Set<Socket<Conn>>();

  const handlers = {
    open(socket: Socket<Conn>) {
      accepted++;
      open.add(socket);
      socket.data = { fault, pending: [] };
      if (fault !== "pass") return;
      Bun.connect<undefined>({
        hostname: to.hostname,
        port: Number(to.port),
        socket: {
          open(up) {
            socket.data.upstream = up;
            for (const chunk of socket.data.pending) up.write(chunk);
            socket.data.pending = [];
          },
          data(_up, chunk) {
            socket.write(chunk);
          },
          close() {
            socket.end();
          },
          error() {
            socket.end();
          },
        },
      }).catch(() => socket.end());
    },
    data(socket: Socket<Conn>, chunk: Uint8Array) {
      const c = socket.data;
      switch (c.fault) {
        case "pass":
          if (c.upstream) c.upstream.write(chunk);
          else c.pending.push(new Uint8Array(chunk));
          return;
        case "reset":
          socket.terminate();
          return;
        case "stall-body":
          if (!c.stalled) {
            c.stalled = true;
            socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{"access_token":"ya29.');
          }
          return;
        default:
          return; // hang: read and never answer
      }
    },
    close(socket: Socket<Conn>) {
      open.delete(socket);
      socket.data?.upstream?.end();
    },
    error(socket: Socket<Conn>) {
      open.delete(socket);
      socket.data?.upstream?.end();
    },
  };

  let listener: TCPSocketListener<Conn> | undefined = Bun.listen<Conn>({ hostname: "127.0.0.1", port: 0, socket: handlers });
  const port = listener.port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get accepted() {
      return accepted;
    },
    async set(next) {
      fault = next;
      for (const s of open) s.terminate();
      open.clear();
      if (next === "refuse") {
        listener?.stop(true);
        listener = undefined;
      } else if (!listener) {
        // The same port again: a refused port that recovers.
        listener = Bun.listen<Conn>({ hostname: "127.0.0.1", port, socket: handlers });
      }
    },
    async stop() {
      for (const s of open) s.terminate();
      open.clear();
      listener?.stop(true);
      listener = undefined;
    },
  };
}
