// The Java client of the TLS tests, run INSIDE the jail as a single-file
// program:  java Main.java URL
// Uses java.net.http.HttpClient with its defaults (the JDK's truststore,
// HTTP/2 offered by ALPN) and prints: STATUS VERSION BODY on one line.
// Exit code 0 on any HTTP answer, 1 when the request failed.

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class Main {
    public static void main(String[] args) {
        try {
            HttpClient client = HttpClient.newBuilder()
                    .connectTimeout(Duration.ofSeconds(30))
                    .build();
            HttpRequest req = HttpRequest.newBuilder(URI.create(args[0]))
                    .timeout(Duration.ofSeconds(60))
                    .GET()
                    .build();
            HttpResponse<String> resp = client.send(req, HttpResponse.BodyHandlers.ofString());
            System.out.println(resp.statusCode() + " " + resp.version() + " " + resp.body().trim());
        } catch (Exception e) {
            System.out.println("ERROR " + e);
            Throwable c = e.getCause();
            while (c != null) {
                System.out.println("CAUSE " + c);
                c = c.getCause();
            }
            System.exit(1);
        }
    }
}
