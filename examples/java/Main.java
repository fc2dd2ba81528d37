// Java against the emulator: google-auth-library-java's Application Default Credentials (ComputeEngineCredentials:
// an access token, the account) and an ID token; the project id read directly (java-core's MetadataConfig ignores
// GCE_METADATA_HOST, see the README).
//   mvn -q compile exec:java      (or ./run.sh 127.0.0.1:8080 with the jars on CLASSPATH)
import com.google.auth.oauth2.ComputeEngineCredentials;
import com.google.auth.oauth2.GoogleCredentials;
import com.google.auth.oauth2.IdTokenCredentials;
import com.google.auth.oauth2.IdTokenProvider;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.List;

public class Main {
  public static void main(String[] args) throws Exception {
    GoogleCredentials credentials =
        GoogleCredentials.getApplicationDefault()
            .createScoped(List.of("https://www.googleapis.com/auth/cloud-platform"));
    String accessToken = credentials.refreshAccessToken().getTokenValue();
    String email = ((ComputeEngineCredentials) credentials).getAccount();

    IdTokenCredentials idCredentials =
        IdTokenCredentials.newBuilder()
            .setIdTokenProvider((IdTokenProvider) credentials)
            .setTargetAudience("https://example.com")
            .setOptions(List.of(IdTokenProvider.Option.FORMAT_FULL))
            .build();
    idCredentials.refresh();
    String idToken = idCredentials.getIdToken().getTokenValue();

    HttpRequest request =
        HttpRequest.newBuilder(
                URI.create(
                    "http://" + System.getenv("GCE_METADATA_HOST") + "/computeMetadata/v1/project/project-id"))
            .header("Metadata-Flavor", "Google")
            .build();
    String projectId =
        HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.ofString()).body();

    System.out.println(
        "{\"credentials\":\"" + credentials.getClass().getName()
            + "\",\"projectId\":\"" + projectId
            + "\",\"email\":\"" + email
            + "\",\"accessToken\":\"" + accessToken
            + "\",\"idToken\":\"" + idToken + "\"}");
  }
}
