import { describe, expect, test } from "bun:test";
import { requireTpmTools, startSwtpm } from "../helpers/swtpm.ts";
import { tctiConfig } from "../../src/tpm/signer.ts";

describe("test helpers", () => {
  test("a missing TPM tool fails the test with the Debian packages to install", () => {
    expect(() => requireTpmTools(["tpm2_no_such_tool"])).toThrow(/tpm2_no_such_tool.*apt-get install -y swtpm swtpm-tools tpm2-tools/);
    // and the real ones are installed here, so the TPM tests below do run
    expect(() => requireTpmTools()).not.toThrow();
  });

  test("startSwtpm gives a TPM that accepts connections, on its own ports, and stop() removes it", async () => {
    const a = await startSwtpm();
    const b = await startSwtpm();
    try {
      expect(a.port).not.toBe(b.port);
      expect(a.tcti).toBe(`swtpm:host=127.0.0.1,port=${a.port}`);
      expect(a.path).toBe(`127.0.0.1:${a.port}`);
      const r = Bun.spawnSync(["tpm2_getrandom", "--hex", "8"], {
        env: { ...process.env, TPM2TOOLS_TCTI: a.tcti },
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(r.exitCode).toBe(0);
      expect(r.stdout.toString()).toMatch(/^[0-9a-f]{16}$/);
      expect(await Bun.file(`${a.dir}/tpm2-00.permall`).exists()).toBe(true);
    } finally {
      await a.stop();
      await b.stop();
    }
    expect(await Bun.file(`${a.dir}/tpm2-00.permall`).exists()).toBe(false);
    const after = Bun.spawnSync(["tpm2_getrandom", "--hex", "8"], {
      env: { ...process.env, TPM2TOOLS_TCTI: a.tcti },
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(after.exitCode).not.toBe(0);
  }, 30_000);
});

describe("tctiConfig", () => {
  test("maps the path option to a TCTI config string", () => {
    expect(tctiConfig("/dev/tpmrm0")).toBe("device:/dev/tpmrm0");
    expect(tctiConfig("/dev/tpm0")).toBe("device:/dev/tpm0");
    expect(tctiConfig("127.0.0.1:2321")).toBe("swtpm:host=127.0.0.1,port=2321");
    expect(tctiConfig("localhost:2321")).toBe("swtpm:host=localhost,port=2321");
    expect(tctiConfig("[::1]:2321")).toBe("swtpm:host=::1,port=2321");
    expect(tctiConfig("mssim:host=127.0.0.1,port=2321")).toBe("mssim:host=127.0.0.1,port=2321");
    expect(() => tctiConfig("tpm")).toThrow(/neither a device/);
  });
});
