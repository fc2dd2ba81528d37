"""Python against the emulator: google-auth's Application Default Credentials (an access token), the project,
and an ID token where the installed google-auth can fetch one from the metadata server (1.7 and later).

    pip install google-auth requests && ./run.sh 127.0.0.1:8080
"""
import json

import google.auth
import google.auth.transport.requests
from google.oauth2 import id_token

request = google.auth.transport.requests.Request()
credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
credentials.refresh(request)
out = {
    "credentials": type(credentials).__module__ + "." + type(credentials).__name__,
    "projectId": project,
    "email": credentials.service_account_email,
    "accessToken": credentials.token,
}
if hasattr(id_token, "fetch_id_token"):
    out["idToken"] = id_token.fetch_id_token(request, "https://example.com")
print(json.dumps(out))
