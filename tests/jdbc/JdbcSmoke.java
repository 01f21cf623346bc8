// Drives Runnel with pgjdbc: prepared statements with parameters, typed results, errors.
// Usage: java -cp postgresql.jar:. JdbcSmoke <port>
import java.sql.*;

public class JdbcSmoke {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/runnel";
        try (Connection c = DriverManager.getConnection(url, "runnel", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM clicks (user_id BIGINT KEY, url TEXT, amount DOUBLE PRECISION, ts TIMESTAMP) WITH (partitions = 4)");
            }
            Timestamp ts = Timestamp.valueOf("2026-01-02 03:04:05");
            try (PreparedStatement p = c.prepareStatement("INSERT INTO clicks VALUES (?, ?, ?, ?)")) {
                for (int i = 0; i < 20; i++) {
                    p.setLong(1, i);
                    p.setString(2, "/page/" + (i % 4));
                    p.setDouble(3, i * 0.5);
                    p.setTimestamp(4, ts);
                    check(p.executeUpdate() == 1, "one row inserted");
                }
            }
            // pgjdbc switches to named server-side statements after a few executions.
            try (PreparedStatement p = c.prepareStatement(
                    "SELECT user_id, url, amount, ts, _partition FROM clicks WHERE url = ? AND user_id >= ? ORDER BY user_id")) {
                for (int round = 0; round < 6; round++) {
                    p.setString(1, "/page/1");
                    p.setLong(2, 5);
                    try (ResultSet rs = p.executeQuery()) {
                        ResultSetMetaData md = rs.getMetaData();
                        check(md.getColumnType(1) == Types.BIGINT, "user_id is BIGINT");
                        check(md.getColumnType(2) == Types.VARCHAR, "url is text: " + md.getColumnTypeName(2));
                        check(md.getColumnType(3) == Types.DOUBLE, "amount is DOUBLE");
                        check(md.getColumnType(4) == Types.TIMESTAMP, "ts is TIMESTAMP");
                        check(md.getColumnType(5) == Types.INTEGER, "_partition is INTEGER");
                        long[] expected = {5, 9, 13, 17};
                        int n = 0;
                        while (rs.next()) {
                            check(rs.getLong(1) == expected[n], "user_id " + rs.getLong(1));
                            check(rs.getString(2).equals("/page/1"), "url");
                            check(rs.getDouble(3) == expected[n] * 0.5, "amount");
                            check(rs.getTimestamp(4).equals(ts), "ts " + rs.getTimestamp(4));
                            n++;
                        }
                        check(n == 4, "four rows, got " + n);
                    }
                }
            }
            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("SELECT * FROM missing_stream");
                    throw new AssertionError("expected an error");
                } catch (SQLException e) {
                    check("42P01".equals(e.getSQLState()), "SQLSTATE 42P01, got " + e.getSQLState());
                }
                try (ResultSet rs = s.executeQuery("SELECT count(*) FROM clicks")) {
                    check(rs.next() && rs.getLong(1) == 20, "the connection carries on");
                }
            }
        }
        System.out.println("jdbc ok");
    }
}
