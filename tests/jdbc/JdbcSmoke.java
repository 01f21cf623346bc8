// Drives Runnel with pgjdbc: prepared statements with parameters, typed results, errors,
// DatabaseMetaData (what DBeaver, Metabase and other JDBC tools call on connect), and a
// subscription read through a cursor.
// Usage: java -cp postgresql.jar:. JdbcSmoke <port> [url parameters, e.g. prepareThreshold=1]
import java.sql.*;

public class JdbcSmoke {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/runnel"
                + (args.length > 1 ? "?" + args[1] : "");
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
            metadata(c);
            cursors(c);
            pushWithFetchSize(c, url);
        }
        System.out.println("jdbc ok");
    }

    static java.util.List<String> column(ResultSet rs, String name) throws SQLException {
        java.util.List<String> values = new java.util.ArrayList<>();
        try (rs) {
            while (rs.next()) values.add(rs.getString(name));
        }
        return values;
    }

    static void metadata(Connection c) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute("CREATE MATERIALIZED VIEW per_url AS SELECT url, count(*) AS n FROM clicks GROUP BY url");
        }
        DatabaseMetaData md = c.getMetaData();
        check(md.getDatabaseProductVersion().startsWith("16"), "server version " + md.getDatabaseProductVersion());
        java.util.List<String> schemas = column(md.getSchemas(), "TABLE_SCHEM");
        check(schemas.contains("public") && schemas.contains("sys"), "schemas " + schemas);
        java.util.List<String> tables = column(md.getTables(null, "public", "%", new String[] {"TABLE"}), "TABLE_NAME");
        check(tables.equals(java.util.List.of("clicks")), "tables " + tables);
        java.util.List<String> views = column(md.getTables(null, "public", "%", new String[] {"MATERIALIZED VIEW"}), "TABLE_NAME");
        check(views.equals(java.util.List.of("per_url")), "materialized views " + views);
        java.util.List<String> all = column(md.getTables(null, null, "%", null), "TABLE_NAME");
        check(all.contains("clicks") && all.contains("per_url") && all.contains("queries"), "all relations " + all);
        try (ResultSet rs = md.getColumns(null, "public", "clicks", "%")) {
            java.util.Map<String, Integer> types = new java.util.LinkedHashMap<>();
            while (rs.next()) types.put(rs.getString("COLUMN_NAME"), rs.getInt("DATA_TYPE"));
            check(types.get("user_id") == Types.BIGINT, "user_id column " + types);
            check(types.get("url") == Types.VARCHAR, "url column " + types);
            check(types.get("amount") == Types.DOUBLE, "amount column " + types);
            check(types.get("ts") == Types.TIMESTAMP, "ts column " + types);
            check(new java.util.ArrayList<>(types.keySet()).subList(0, 4).equals(java.util.List.of("user_id", "url", "amount", "ts")), "column order " + types);
        }
        java.util.List<String> viewColumns = column(md.getColumns(null, "public", "per_url", "%"), "COLUMN_NAME");
        check(viewColumns.equals(java.util.List.of("url", "n")), "view columns " + viewColumns);
        // A stream is append-only: its key columns place records, they are not unique.
        check(column(md.getPrimaryKeys(null, "public", "clicks"), "COLUMN_NAME").isEmpty(), "no primary key");
    }

    static void cursors(Connection c) throws SQLException {
        c.setAutoCommit(false);
        try (Statement s = c.createStatement()) {
            s.execute("DECLARE sub CURSOR FOR SUBSCRIBE clicks WITH (snapshot = true)");
            int seen = 0;
            try (ResultSet rs = s.executeQuery("FETCH 100 sub WITH (timeout = '1s')")) {
                while (rs.next()) seen++;
            }
            check(seen == 20, "the stream's 20 records, got " + seen);
            try (ResultSet rs = s.executeQuery("FETCH 100 sub WITH (timeout = '100ms')")) {
                check(!rs.next(), "nothing new");
            }
            s.execute("INSERT INTO clicks VALUES (100, '/new', 1.0, NULL)");
            try (ResultSet rs = s.executeQuery("FETCH 100 sub WITH (timeout = '10s')")) {
                check(rs.next() && rs.getLong("user_id") == 100 && !rs.next(), "the new record");
            }
        }
        c.commit();
        // A consumer group: read some, commit, and the next cursor goes on from there.
        try (Statement s = c.createStatement()) {
            s.execute("CREATE SUBSCRIPTION audit FROM clicks WITH (start = 'earliest')");
            c.commit();
            long total = 0;
            for (int round = 0; round < 3; round++) {
                s.execute("DECLARE cur SUBSCRIPTION CURSOR FOR audit");
                try (PreparedStatement p = c.prepareStatement("FETCH 8 FROM cur WITH (timeout = '1s')")) {
                    try (ResultSet rs = p.executeQuery()) {
                        while (rs.next()) total++;
                    }
                }
                c.commit();
            }
            check(total == 21, "21 records over three cursors, got " + total);
            try (ResultSet rs = s.executeQuery("SELECT sum(lag) FROM sys.consumer_groups WHERE \"group\" = 'audit'")) {
                check(rs.next() && rs.getLong(1) == 0, "no lag after the commits");
            }
            c.commit();
        }
        c.setAutoCommit(true);
    }

    // A push query read with a fetch size: pgjdbc executes its portal a few rows at a time
    // (Execute with a row limit) and each fetch returns the rows that are ready.
    static void pushWithFetchSize(Connection c, String url) throws Exception {
        c.setAutoCommit(false);
        Thread writer = new Thread(() -> {
            try (Connection w = DriverManager.getConnection(url, "runnel", "");
                 Statement s = w.createStatement()) {
                for (int i = 0; i < 5; i++) {
                    Thread.sleep(200);
                    s.execute("INSERT INTO clicks VALUES (" + (1000 + i) + ", '/push', 1.0, NULL)");
                }
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        try (Statement s = c.createStatement()) {
            s.setFetchSize(2);
            // From the stream's start, so that no row of the writer's can come too early.
            s.execute("SET auto_offset_reset = 'earliest'");
            // executeQuery waits for the first rows; the writer's come 200 ms apart.
            writer.start();
            try (ResultSet rs = s.executeQuery("SELECT user_id FROM clicks WHERE url = '/push' EMIT CHANGES")) {
                for (int i = 0; i < 5; i++) {
                    check(rs.next(), "push row " + i);
                    check(rs.getLong(1) == 1000 + i, "push row " + rs.getLong(1));
                }
            }
        }
        writer.join();
        c.commit();
        c.setAutoCommit(true);
    }
}
