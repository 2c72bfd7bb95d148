package hmsguard.spark;

import java.util.List;
import java.util.Objects;

/** One question for hms-guard: may the session's user do {@code action}? */
final class Question {
    /** Writes into a table: {@code privileges} among INSERT, UPDATE, DELETE. */
    static final String WRITE_TABLE = "write_table";
    /** A new table with data (CTAS, saveAsTable of a new table): CREATE in {@code db}. */
    static final String CREATE_TABLE = "create_table";
    /** Reading files by path, outside any table. */
    static final String READ_PATH = "read_path";
    /** Writing files by path, outside any table. */
    static final String WRITE_PATH = "write_path";

    final String action;
    final String db;
    final String table;
    final String path;
    final List<String> privileges;
    /** What the plan does, for the error message ("INSERT INTO demo.t"). */
    final String what;

    private Question(String action, String db, String table, String path, List<String> privileges,
            String what) {
        this.action = action;
        this.db = db;
        this.table = table;
        this.path = path;
        this.privileges = privileges;
        this.what = what;
    }

    static Question writeTable(String db, String table, List<String> privileges, String what) {
        return new Question(WRITE_TABLE, db, table, null, privileges, what);
    }

    static Question createTable(String db, String table, String location, String what) {
        return new Question(CREATE_TABLE, db, table, location, List.of(), what);
    }

    static Question readPath(String path, String what) {
        return new Question(READ_PATH, null, null, path, List.of(), what);
    }

    static Question writePath(String path, String what) {
        return new Question(WRITE_PATH, null, null, path, List.of(), what);
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof Question)) {
            return false;
        }
        Question q = (Question) o;
        return action.equals(q.action) && Objects.equals(db, q.db) && Objects.equals(table, q.table)
            && Objects.equals(path, q.path) && privileges.equals(q.privileges);
    }

    @Override
    public int hashCode() {
        return Objects.hash(action, db, table, path, privileges);
    }
}
