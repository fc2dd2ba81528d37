// .NET against the emulator: Google.Apis.Auth's Application Default Credentials (ComputeCredential: an access
// token) and an OIDC (ID) token.
//   GCE_METADATA_HOST=127.0.0.1:8080 dotnet run      (or ./run.sh 127.0.0.1:8080)
using System.Text.Json;
using Google.Apis.Auth.OAuth2;

var credential = (await GoogleCredential.GetApplicationDefaultAsync())
    .CreateScoped("https://www.googleapis.com/auth/cloud-platform");
var accessToken = await credential.UnderlyingCredential.GetAccessTokenForRequestAsync();
var oidc = await credential.GetOidcTokenAsync(
    OidcTokenOptions.FromTargetAudience("https://example.com").WithTokenFormat(OidcTokenFormat.Full));
var idToken = await oidc.GetAccessTokenAsync();

Console.WriteLine(JsonSerializer.Serialize(new
{
    credentials = credential.UnderlyingCredential.GetType().FullName,
    accessToken,
    idToken,
}));
