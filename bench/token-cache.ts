/**
 * Token-cache eviction cost: the time per miss in a full cache of 1,000 entries (the baseline) and of 100,000
 * entries, measured in the same run. With CLOCK eviction the ratio stays near 1 (O(1) amortised); the former scan
 * of every entry per miss grew with the size. Also the cost of a fresh hit, which must make no allocation.
 *
 *   node_modules/.bin/bun bench/token-cache.ts [misses]
 */
import type { CredentialSource, IdTokenRequest } from "../src/credentials/source.ts";
import { CachedToken, TokenCache } from "../src/credentials/token-cache.ts";

const MISSES = Number(process.argv[2] ?? 20_000);
const account = { email: "sa@example-project.iam.gserviceaccount.com", scopes: [] as string[] };
const instance = {
  projectId: "",
  projectNumber: "",
  instanceId: "",
  instanceName: "",
  zone: "",
  instanceCreationTimestamp: 0,
  licenseIds: [],
};
const source: CredentialSource = {
  describe: () => ({ type: "bench" }),
  accessToken: async () => ({ token: "ya29.x", expiresAt: Date.now() + 3600_000 }),
  idToken: async (r) => ({ token: `id.${r.audience}`, expiresAt: Date.now() + 3600_000 }),
};
const req = (audience: string): IdTokenRequest => ({ account, audience, format: "standard", licenses: false, instance });

async function perMiss(size: number): Promise<number> {
  const cache = new TokenCache(source, { maxEntries: size, maxBytes: 1 << 30 });
  for (let i = 0; i < size; i++) await cache.idToken(req(`https://fill-${i}.example`));
  const t0 = performance.now();
  for (let i = 0; i < MISSES; i++) await cache.idToken(req(`https://miss-${i}.example`));
  return ((performance.now() - t0) * 1000) / MISSES;
}

// The fresh hit first, before the large caches leave garbage for the collector.
const cache = new TokenCache(source);
await cache.idToken(req("https://hot.example"));
const hot = req("https://hot.example");
const N = 1_000_000;
const t0 = performance.now();
for (let i = 0; i < N; i++) if (!(cache.idToken(hot) instanceof CachedToken)) throw new Error("not a fresh hit");
console.log(`fresh hit: ${(((performance.now() - t0) * 1e6) / N).toFixed(0)} ns`);

const small = await perMiss(1_000);
const large = await perMiss(100_000);
console.log(`per miss, full cache of 1,000 entries:   ${small.toFixed(2)} µs (baseline)`);
console.log(`per miss, full cache of 100,000 entries: ${large.toFixed(2)} µs (${(large / small).toFixed(2)}× the baseline)`);
