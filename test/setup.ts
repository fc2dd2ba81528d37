import { setDefaultTimeout } from "bun:test";

// Real servers, software TPMs and client libraries take longer than Bun's 5 s default on a busy 2-core machine.
setDefaultTimeout(30_000);
