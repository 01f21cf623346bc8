// Connects with pgjdbc over TLS (the URL carries ssl=true and the root certificate) and runs
// a query. Usage: java -cp postgresql.jar:. JdbcTls <jdbc url>
import java.sql.*;

public class JdbcTls {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "runnel", "");
             Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT 40 + 2")) {
            if (!rs.next() || rs.getInt(1) != 42) throw new AssertionError("SELECT 40 + 2");
        }
        System.out.println("jdbc tls ok");
    }
}
