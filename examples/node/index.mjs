// Node against the emulator: gcp-metadata for metadata, google-auth-library for Application Default Credentials
// (an access token) and an ID token.
//   npm install && GCE_METADATA_HOST=127.0.0.1:8080 node index.mjs     (or ./run.sh 127.0.0.1:8080)
import * as gcpMetadata from "gcp-metadata";
import { GoogleAuth } from "google-auth-library";

const auth = new GoogleAuth({ scopes: "https://www.googleapis.com/auth/cloud-platform" });
const audience = "https://example.com";
const idClient = await auth.getIdTokenClient(audience);

console.log(
  JSON.stringify({
    onGCE: await gcpMetadata.isAvailable(),
    projectId: await gcpMetadata.project("project-id"),
    zone: await gcpMetadata.instance("zone"),
    adcProjectId: await auth.getProjectId(),
    email: (await auth.getCredentials()).client_email,
    accessToken: await auth.getAccessToken(),
    idToken: await idClient.idTokenProvider.fetchIdToken(audience),
  }),
);
