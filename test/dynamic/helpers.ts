/** Shared pieces of the dynamic-behaviour tests: a started server, header-carrying fetch, and wait helpers. */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MetadataServer, type MetadataServerOptions } from "../../src/index.ts";
import { createLogger, type Logger } from "../../src/log.ts";

export const V1 = "/computeMetadata/v1/";
export const FLAVOR = { "Metadata-Flavor": "Google" };
export const DEFAULT_CONFIG = JSON.parse(readFileSync(new URL("../../config.json", import.meta.url), "utf8")) as {
  computeMetadata: { v1: Record<string, any> };
};

/** A fresh copy of the bundled config, to edit in a test. */
export function config(): { computeMetadata: { v1: Record<string, any> } } {
  return structuredClone(DEFAULT_CONFIG);
}

export interface Started {
  server: MetadataServer;
  url: string;
  get(path: string, init?: RequestInit): Promise<Response>;
  /** Fetch with Metadata-Flavor and a method. */
  req(method: string, path: string, body?: string, headers?: Record<string, string>): Promise<Response>;
}

export async function start(options: MetadataServerOptions = {}): Promise<Started> {
  const server = new MetadataServer({ serverConfig: { port: 0 }, ...options });
  const { url } = await server.start();
  const get = (path: string, init: RequestInit = {}) =>
    fetch(url + path, { ...init, headers: { ...FLAVOR, ...((init.headers as Record<string, string>) ?? {}) } });
  const req = (method: string, path: string, body?: string, headers: Record<string, string> = {}) =>
    fetch(url + path, { method, ...(body !== undefined ? { body } : {}), headers: { ...FLAVOR, ...headers } });
  return { server, url, get, req };
}

/** A response's status, ETag and body in one object. */
export async function read(r: Response): Promise<{ status: number; etag: string | null; body: string; type: string | null }> {
  return { status: r.status, etag: r.headers.get("etag"), body: await r.text(), type: r.headers.get("content-type") };
}

/** Resolves true if the promise settles within `ms`, false otherwise (the promise keeps running). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([p.then(() => true), new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms)))]);
  clearTimeout(timer);
  return r;
}

/** Wait until `cond()` holds, polling every 5 ms (test-side only), up to `ms`. */
export async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached in time");
    await Bun.sleep(5);
  }
}

export function tempDir(prefix = "gce-md-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A logger that keeps its lines. */
export function memoryLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger("info", (l) => lines.push(l)), lines };
}
