import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import javax.net.ssl.SSLContext;

/**
 * A Java HTTPS client configured the way the README tells Java users to: only the standard javax.net.ssl
 * system properties (keyStore, keyStoreType, keyStorePassword, trustStore, ...), no code that knows about
 * mtls-operator. Prints the status code on the first line and the body after it; a failed handshake or
 * connection prints FAILED and the exception, and exits 2.
 */
public class KeystoreClient {
  public static void main(String[] args) throws Exception {
    HttpClient client = HttpClient.newBuilder()
        .version(HttpClient.Version.HTTP_1_1)
        .sslContext(SSLContext.getDefault())
        .build();
    HttpRequest request = HttpRequest.newBuilder(URI.create(args[0])).GET().build();
    try {
      HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
      System.out.println(response.statusCode());
      System.out.println(response.body());
    } catch (Exception e) {
      System.out.println("FAILED " + e);
      System.exit(2);
    }
  }
}
