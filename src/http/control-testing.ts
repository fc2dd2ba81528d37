/**
 * The control API's test superpowers, beside control.ts and with the same admission: the virtual clock (clock.ts)
 * and fault injection (faults.ts).
 *
 *   GET    /emulator/v1/clock         {"now":"<RFC 3339>","offsetSeconds":N}
 *   POST   /emulator/v1/clock         {"advance":"58m"} (a Go duration, may be negative) or {"set":"2030-01-01T00:00:00Z"}
 *   DELETE /emulator/v1/clock         back to real time
 *   GET    /emulator/v1/faults        {"rules":[…]}, each with `id`, its fields, `hits` and `active`
 *   POST   /emulator/v1/faults        a rule as JSON (or the -fault flag's key=value text): 201 with the rule
 *   DELETE /emulator/v1/faults/<id>   remove one rule (200 with it; 404 for an unknown id)
 *   DELETE /emulator/v1/faults        remove every rule: {"removed":N}
 */
import { Elysia } from "elysia";
import type { Clock } from "../clock.ts";
import { RequestError } from "../errors.ts";
import { json, methods, specBody } from "./control.ts";
import { type ControlOptions, controlGate } from "./control-gate.ts";
import { faultFrom, parseFaultSpec } from "./faults.ts";
import { ROUTES } from "./routes.ts";

function clockChange(clock: Clock, body: Record<string, unknown> | string): ReturnType<Clock["state"]> {
  if (typeof body === "string" || !isPlain(body)) {
    throw new RequestError(400, "BAD_REQUEST", 'the body must be a JSON object: {"advance":"58m"} or {"set":"2030-01-01T00:00:00Z"}');
  }
  const extra = Object.keys(body).filter((k) => k !== "advance" && k !== "set");
  if (extra.length > 0) throw new RequestError(400, "BAD_REQUEST", `unknown field ${JSON.stringify(extra[0])}: give advance or set`);
  const { advance, set } = body;
  if ((advance === undefined) === (set === undefined)) {
    throw new RequestError(400, "BAD_REQUEST", 'give exactly one of advance (a Go duration, e.g. "58m") or set (RFC 3339 time)');
  }
  if (advance !== undefined) {
    if (typeof advance !== "string") throw new RequestError(400, "BAD_REQUEST", 'advance: a Go duration as a string, e.g. "58m" or "-5m"');
    return clock.advance(advance);
  }
  if (typeof set !== "string") throw new RequestError(400, "BAD_REQUEST", 'set: an RFC 3339 time as a string, e.g. "2030-01-01T00:00:00Z"');
  return clock.set(set);
}

const isPlain = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export function testingRoutes(options: ControlOptions) {
  const { clock, faults } = options.target;
  const { maxBodyBytes } = options;
  const gate = controlGate({ ...options, maxBodyBytes: Number.POSITIVE_INFINITY });
  const state = () => json(200, JSON.stringify(clock.state()));
  return new Elysia({ name: "control-api-testing" })
    .parser("spec", ({ request }) => specBody(request, maxBodyBytes))
    .onBeforeHandle(({ request }) => gate(request))
    .get(ROUTES.clock, state)
    .post(ROUTES.clock, ({ body }) => json(200, JSON.stringify(clockChange(clock, body as Record<string, unknown> | string))), {
      parse: "spec",
    })
    .delete(ROUTES.clock, () => json(200, JSON.stringify(clock.reset())))
    .all(ROUTES.clock, methods("GET, POST or DELETE"))
    .get(ROUTES.faults, () => json(200, JSON.stringify({ rules: faults.list() })))
    .post(
      ROUTES.faults,
      ({ body }) => {
        const b = body as Record<string, unknown> | string;
        return json(201, JSON.stringify(faults.add(typeof b === "string" ? parseFaultSpec(b) : faultFrom(b))));
      },
      { parse: "spec" },
    )
    .delete(ROUTES.faults, () => json(200, JSON.stringify({ removed: faults.clear() })))
    .all(ROUTES.faults, methods("GET, POST or DELETE"))
    .delete(ROUTES.fault, ({ params }) => {
      const removed = faults.remove(params.id);
      if (!removed)
        throw new RequestError(404, "NOT_FOUND", `no fault rule ${JSON.stringify(params.id)}: GET /emulator/v1/faults lists them`);
      return json(200, JSON.stringify(removed));
    })
    .all(ROUTES.fault, methods("DELETE"));
}
