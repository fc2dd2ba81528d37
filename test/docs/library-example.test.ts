// The README's library example, verbatim (test/docs/examples.test.ts checks that it is): if this breaks, the README is wrong.
import { afterAll, beforeAll, expect, test } from "bun:test";
import * as gcpMetadata from "gcp-metadata";
import { GoogleAuth } from "google-auth-library";
import { MetadataServer } from "gce-metadata-server";

const server = new MetadataServer({
  serverConfig: { port: 0 }, // a free port
  claims: {
    computeMetadata: {
      v1: {
        project: { projectId: "my-test-project", numericProjectId: 42 },
        instance: {
          zone: "projects/42/zones/europe-west1-b",
          serviceAccounts: {
            default: { email: "app@my-test-project.iam.gserviceaccount.com", scopes: ["https://www.googleapis.com/auth/cloud-platform"] },
          },
        },
      },
    },
  },
});
let restore: () => void;

beforeAll(async () => {
  await server.start();
  restore = server.applyEnv(); // GCE_METADATA_HOST, GCE_METADATA_IP, GCE_METADATA_ROOT
  gcpMetadata.resetIsAvailableCache();
});
afterAll(async () => {
  restore();
  await server.stop();
});

test("code under test sees the emulated VM and gets tokens", async () => {
  expect(await gcpMetadata.project("project-id")).toBe("my-test-project");
  expect(await gcpMetadata.instance("zone")).toBe("projects/42/zones/europe-west1-b");
  const token = await new GoogleAuth({ projectId: "my-test-project" }).getAccessToken();
  expect(token).toStartWith("ya29.");
});
