/**
 * A Map that keeps at most `capacity` entries, dropping the least recently used: per-scope clients and similar
 * caches keyed by what requests ask for, which must not grow with every new key a client invents.
 *
 * @example
 *   const clients = new BoundedMap<string, Client>(32);
 *   clients.set(scopes.join(" "), client); clients.get(key); // a get counts as a use
 */
export class BoundedMap<K, V> {
  private readonly map = new Map<K, V>();

  constructor(readonly capacity: number) {}

  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value as K);
  }

  delete(key: K): boolean {
    return this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }
}
