package hmsguard.spark;

import java.net.URI;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.SaveMode;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.ResolvedIdentifier;
import org.apache.spark.sql.catalyst.catalog.CatalogTable;
import org.apache.spark.sql.catalyst.catalog.HiveTableRelation;
import org.apache.spark.sql.catalyst.plans.logical.AppendData;
import org.apache.spark.sql.catalyst.plans.logical.CreateTableAsSelect;
import org.apache.spark.sql.catalyst.plans.logical.DeleteAction;
import org.apache.spark.sql.catalyst.plans.logical.DeleteFromTable;
import org.apache.spark.sql.catalyst.plans.logical.InsertIntoStatement;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.MergeAction;
import org.apache.spark.sql.catalyst.plans.logical.MergeIntoTable;
import org.apache.spark.sql.catalyst.plans.logical.OverwriteByExpression;
import org.apache.spark.sql.catalyst.plans.logical.OverwritePartitionsDynamic;
import org.apache.spark.sql.catalyst.plans.logical.ReplaceData;
import org.apache.spark.sql.catalyst.plans.logical.ReplaceTableAsSelect;
import org.apache.spark.sql.catalyst.plans.logical.WriteDelta;
import org.apache.spark.sql.connector.write.RowLevelOperation;
import org.apache.spark.sql.catalyst.plans.logical.SubqueryAlias;
import org.apache.spark.sql.catalyst.plans.logical.UpdateTable;
import org.apache.spark.sql.catalyst.plans.logical.V2WriteCommand;
import org.apache.spark.sql.connector.catalog.CatalogPlugin;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.execution.command.CreateDataSourceTableAsSelectCommand;
import org.apache.spark.sql.execution.command.DataWritingCommand;
import org.apache.spark.sql.execution.command.InsertIntoDataSourceDirCommand;
import org.apache.spark.sql.execution.command.LoadDataCommand;
import org.apache.spark.sql.execution.command.TruncateTableCommand;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.InsertIntoDataSourceCommand;
import org.apache.spark.sql.execution.datasources.InsertIntoHadoopFsRelationCommand;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import org.apache.spark.sql.execution.datasources.SaveIntoDataSourceCommand;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.execution.datasources.v2.FileTable;
import org.apache.spark.sql.hive.execution.CreateHiveTableAsSelectCommand;
import org.apache.spark.sql.hive.execution.InsertIntoHiveDirCommand;
import org.apache.spark.sql.hive.execution.InsertIntoHiveTable;

import scala.jdk.javaapi.CollectionConverters;

/**
 * Finds every write (and every read by path) in an analysed plan and turns it into questions
 * for hms-guard. A write this class does not recognise is refused: the check fails closed.
 */
final class WriteCheck {
    /** Largest plan walked (nodes); a larger plan is refused rather than half checked. */
    static final int MAX_NODES = 100_000;
    static final List<String> INSERT = List.of("INSERT");
    static final List<String> OVERWRITE = List.of("INSERT", "DELETE");
    static final List<String> DELETE = List.of("DELETE");
    static final List<String> UPDATE = List.of("UPDATE");

    private final SparkSession session;
    private final Set<String> unguardedCatalogs;
    private final Set<Question> questions = new LinkedHashSet<>();
    private final IdentityHashMap<Object, Boolean> seen = new IdentityHashMap<>();

    WriteCheck(SparkSession session, Set<String> unguardedCatalogs) {
        this.session = session;
        this.unguardedCatalogs = unguardedCatalogs;
    }

    /** The questions of {@code plan}, each once, in plan order. */
    static Set<Question> questions(SparkSession session, Set<String> unguarded, LogicalPlan plan) {
        WriteCheck w = new WriteCheck(session, unguarded);
        w.walk(plan);
        return w.questions;
    }

    private void walk(LogicalPlan root) {
        List<LogicalPlan> todo = new ArrayList<>();
        todo.add(root);
        while (!todo.isEmpty()) {
            LogicalPlan p = todo.remove(todo.size() - 1);
            if (seen.put(p, Boolean.TRUE) != null) {
                continue;
            }
            if (seen.size() > MAX_NODES) {
                throw new AccessDenied("hms-guard-spark: the plan has more than " + MAX_NODES
                    + " nodes; refused rather than checked in part");
            }
            visit(p);
            todo.addAll(CollectionConverters.asJava(p.children()));
            for (Object c : CollectionConverters.asJava(p.innerChildren())) {
                if (c instanceof LogicalPlan) {
                    todo.add((LogicalPlan) c);
                }
            }
            for (Object c : CollectionConverters.asJava(p.subqueries())) {
                if (c instanceof LogicalPlan) {
                    todo.add((LogicalPlan) c);
                }
            }
        }
    }

    private void visit(LogicalPlan p) {
        if (p instanceof InsertIntoHadoopFsRelationCommand) {
            InsertIntoHadoopFsRelationCommand c = (InsertIntoHadoopFsRelationCommand) p;
            boolean overwrite = c.mode() == SaveMode.Overwrite;
            if (c.catalogTable().isDefined()) {
                table(c.catalogTable().get().identifier(), overwrite ? OVERWRITE : INSERT,
                    overwrite ? "INSERT OVERWRITE" : "INSERT INTO");
            } else {
                ask(Question.writePath(c.outputPath().toString(), "write files at " + c.outputPath()));
            }
        } else if (p instanceof InsertIntoHiveTable) {
            InsertIntoHiveTable c = (InsertIntoHiveTable) p;
            table(c.table().identifier(), c.overwrite() ? OVERWRITE : INSERT,
                c.overwrite() ? "INSERT OVERWRITE" : "INSERT INTO");
        } else if (p instanceof InsertIntoHiveDirCommand) {
            InsertIntoHiveDirCommand c = (InsertIntoHiveDirCommand) p;
            directory(c.storage().locationUri(), c.isLocal());
        } else if (p instanceof InsertIntoDataSourceDirCommand) {
            directory(((InsertIntoDataSourceDirCommand) p).storage().locationUri(), false);
        } else if (p instanceof CreateDataSourceTableAsSelectCommand) {
            CreateDataSourceTableAsSelectCommand c = (CreateDataSourceTableAsSelectCommand) p;
            createAsSelect(c.table(), c.mode());
        } else if (p instanceof CreateHiveTableAsSelectCommand) {
            CreateHiveTableAsSelectCommand c = (CreateHiveTableAsSelectCommand) p;
            createAsSelect(c.tableDesc(), c.mode());
        } else if (p instanceof LoadDataCommand) {
            LoadDataCommand c = (LoadDataCommand) p;
            table(c.table(), c.isOverwrite() ? OVERWRITE : INSERT,
                c.isOverwrite() ? "LOAD DATA … OVERWRITE INTO" : "LOAD DATA INTO");
            // LOAD moves the files away from a non-local path: that path is written too.
            ask(c.isLocal()
                ? Question.readPath(localUri(c.path()), "read files at " + c.path())
                : Question.writePath(c.path(), "move files from " + c.path()));
        } else if (p instanceof TruncateTableCommand) {
            table(((TruncateTableCommand) p).tableName(), DELETE, "TRUNCATE TABLE");
        } else if (p instanceof InsertIntoDataSourceCommand) {
            InsertIntoDataSourceCommand c = (InsertIntoDataSourceCommand) p;
            LogicalRelation r = c.logicalRelation();
            if (r.catalogTable().isDefined()) {
                table(r.catalogTable().get().identifier(), c.overwrite() ? OVERWRITE : INSERT,
                    c.overwrite() ? "INSERT OVERWRITE" : "INSERT INTO");
            }
            // Otherwise a relation of another system (JDBC…), which authorizes its own writes.
        } else if (p instanceof SaveIntoDataSourceCommand) {
            SaveIntoDataSourceCommand c = (SaveIntoDataSourceCommand) p;
            scala.Option<String> path = c.options().get("path");
            if (path.isDefined()) {
                ask(Question.writePath(path.get(), "write files at " + path.get()));
            }
        } else if (p instanceof InsertIntoStatement) {
            InsertIntoStatement c = (InsertIntoStatement) p;
            target(c.table(), c.overwrite() ? OVERWRITE : INSERT,
                c.overwrite() ? "INSERT OVERWRITE" : "INSERT INTO");
        } else if (p instanceof AppendData) {
            target((LogicalPlan) (Object) ((AppendData) p).table(), INSERT, "append to");
        } else if (p instanceof OverwriteByExpression) {
            target((LogicalPlan) (Object) ((OverwriteByExpression) p).table(), OVERWRITE, "overwrite");
        } else if (p instanceof OverwritePartitionsDynamic) {
            target((LogicalPlan) (Object) ((OverwritePartitionsDynamic) p).table(), OVERWRITE, "overwrite partitions of");
        } else if (p instanceof DeleteFromTable) {
            target(((DeleteFromTable) p).table(), DELETE, "DELETE FROM");
        } else if (p instanceof UpdateTable) {
            target(((UpdateTable) p).table(), UPDATE, "UPDATE");
        } else if (p instanceof MergeIntoTable) {
            MergeIntoTable m = (MergeIntoTable) p;
            target(m.targetTable(), mergePrivileges(m), "MERGE INTO");
        } else if (p instanceof ReplaceData) {
            ReplaceData r = (ReplaceData) p;
            target((LogicalPlan) (Object) r.table(), rowLevel(r.operation()), "rewrite rows of");
        } else if (p instanceof WriteDelta) {
            WriteDelta r = (WriteDelta) p;
            target((LogicalPlan) (Object) r.table(), rowLevel(r.operation()), "rewrite rows of");
        } else if (p instanceof CreateTableAsSelect) {
            CreateTableAsSelect c = (CreateTableAsSelect) p;
            v2Create(c.name(), "CREATE TABLE … AS SELECT");
        } else if (p instanceof ReplaceTableAsSelect) {
            ReplaceTableAsSelect c = (ReplaceTableAsSelect) p;
            v2Create(c.name(), "REPLACE TABLE … AS SELECT");
        } else if (p instanceof DataWritingCommand || p instanceof V2WriteCommand) {
            throw new AccessDenied("hms-guard-spark: refused a write it does not recognise ("
                + p.getClass().getName() + "); ask your platform team to update hms-guard-spark");
        } else if (p instanceof LogicalRelation) {
            LogicalRelation r = (LogicalRelation) p;
            if (r.catalogTable().isEmpty() && r.relation() instanceof HadoopFsRelation) {
                HadoopFsRelation fs = (HadoopFsRelation) r.relation();
                for (Path root : CollectionConverters.asJava(fs.location().rootPaths())) {
                    ask(Question.readPath(root.toString(), "read files at " + root));
                }
            }
        } else if (p instanceof DataSourceV2Relation) {
            DataSourceV2Relation r = (DataSourceV2Relation) p;
            if (r.identifier().isEmpty() && r.table() instanceof FileTable) {
                for (Path root : fileTableRoots((FileTable) r.table())) {
                    ask(Question.readPath(root.toString(), "read files at " + root));
                }
            }
        }
    }

    private void ask(Question q) {
        questions.add(q);
    }

    private void table(TableIdentifier id, List<String> privileges, String what) {
        String db = id.database().isDefined() ? id.database().get()
            : session.sessionState().catalog().getCurrentDatabase();
        ask(Question.writeTable(db, id.table(), privileges, what + " " + db + "." + id.table()));
    }

    private void directory(scala.Option<URI> location, boolean local) {
        if (location.isEmpty()) {
            throw new AccessDenied("hms-guard-spark: refused INSERT OVERWRITE DIRECTORY without a"
                + " location");
        }
        String path = location.get().toString();
        ask(Question.writePath(local ? localUri(path) : path, "INSERT OVERWRITE DIRECTORY " + path));
    }

    private static String localUri(String path) {
        return path.contains(":") ? path : "file://" + (path.startsWith("/") ? "" : "/") + path;
    }

    /** A table created with data: CREATE in its database when new; a write into it when it
     * exists and the mode appends or overwrites. */
    private void createAsSelect(CatalogTable t, SaveMode mode) {
        TableIdentifier id = t.identifier();
        String db = id.database().isDefined() ? id.database().get()
            : session.sessionState().catalog().getCurrentDatabase();
        String name = db + "." + id.table();
        boolean exists = session.sessionState().catalog()
            .tableExists(new TableIdentifier(id.table(), scala.Option.apply(db)));
        if (exists && (mode == SaveMode.Append || mode == SaveMode.Overwrite)) {
            boolean overwrite = mode == SaveMode.Overwrite;
            ask(Question.writeTable(db, id.table(), overwrite ? OVERWRITE : INSERT,
                (overwrite ? "overwrite " : "append to ") + name));
            return;
        }
        String location = t.storage().locationUri().isDefined()
            ? t.storage().locationUri().get().toString() : null;
        ask(Question.createTable(db, id.table(), location, "CREATE TABLE " + name + " AS SELECT"));
    }

    private void v2Create(LogicalPlan name, String what) {
        if (!(name instanceof ResolvedIdentifier)) {
            throw new AccessDenied("hms-guard-spark: refused " + what + ": its target is not resolved");
        }
        ResolvedIdentifier r = (ResolvedIdentifier) name;
        if (unguardedCatalogs.contains(r.catalog().name())) {
            return;
        }
        Identifier id = r.identifier();
        String db = lastNamespace(id, what);
        ask(Question.createTable(db, id.name(), null, what + " " + db + "." + id.name()));
    }

    private static String lastNamespace(Identifier id, String what) {
        String[] ns = id.namespace();
        if (ns.length == 0) {
            throw new AccessDenied("hms-guard-spark: refused " + what + " " + id.name()
                + ": the table has no database");
        }
        return ns[ns.length - 1];
    }

    /** The table (or files) a v1 or v2 write goes to. */
    private void target(LogicalPlan t, List<String> privileges, String what) {
        while (t instanceof SubqueryAlias) {
            t = ((SubqueryAlias) t).child();
        }
        if (t instanceof HiveTableRelation) {
            table(((HiveTableRelation) t).tableMeta().identifier(), privileges, what);
        } else if (t instanceof LogicalRelation) {
            LogicalRelation r = (LogicalRelation) t;
            if (r.catalogTable().isDefined()) {
                table(r.catalogTable().get().identifier(), privileges, what);
            } else if (r.relation() instanceof HadoopFsRelation) {
                HadoopFsRelation fs = (HadoopFsRelation) r.relation();
                for (Path root : CollectionConverters.asJava(fs.location().rootPaths())) {
                    ask(Question.writePath(root.toString(), what + " files at " + root));
                }
            }
            // Otherwise a relation of another system (JDBC…), which authorizes its own writes.
        } else if (t instanceof DataSourceV2Relation) {
            DataSourceV2Relation r = (DataSourceV2Relation) t;
            if (r.identifier().isDefined()) {
                CatalogPlugin catalog = r.catalog().isDefined() ? r.catalog().get() : null;
                if (catalog != null && unguardedCatalogs.contains(catalog.name())) {
                    return;
                }
                Identifier id = r.identifier().get();
                String db = lastNamespace(id, what);
                ask(Question.writeTable(db, id.name(), privileges, what + " " + db + "." + id.name()));
            } else if (r.table() instanceof FileTable) {
                for (Path root : fileTableRoots((FileTable) r.table())) {
                    ask(Question.writePath(root.toString(), what + " files at " + root));
                }
            } else {
                throw new AccessDenied("hms-guard-spark: refused " + what + " "
                    + r.table().name() + ": a table hms-guard-spark cannot name");
            }
        } else {
            throw new AccessDenied("hms-guard-spark: refused " + what + ": its target ("
                + t.getClass().getSimpleName() + ") is not a table hms-guard-spark recognises");
        }
    }

    /** The privileges of a row-level rewrite (the form DELETE, UPDATE and MERGE take for v2
     * tables that support them). */
    private static List<String> rowLevel(RowLevelOperation op) {
        switch (op.command()) {
            case DELETE:
                return DELETE;
            case UPDATE:
                return UPDATE;
            default:
                return List.of("INSERT", "UPDATE", "DELETE");
        }
    }

    private static List<Path> fileTableRoots(FileTable t) {
        return CollectionConverters.asJava(t.fileIndex().rootPaths());
    }

    private static List<String> mergePrivileges(MergeIntoTable m) {
        Set<String> out = new LinkedHashSet<>();
        List<MergeAction> all = new ArrayList<>();
        all.addAll(CollectionConverters.asJava(m.matchedActions()));
        all.addAll(CollectionConverters.asJava(m.notMatchedActions()));
        all.addAll(CollectionConverters.asJava(m.notMatchedBySourceActions()));
        for (MergeAction a : all) {
            String n = a.getClass().getSimpleName();
            if (a instanceof DeleteAction) {
                out.add("DELETE");
            } else if (n.startsWith("Update")) {
                out.add("UPDATE");
            } else if (n.startsWith("Insert")) {
                out.add("INSERT");
            } else {
                // An action this class does not know: every write privilege.
                out.add("INSERT");
                out.add("UPDATE");
                out.add("DELETE");
            }
        }
        if (out.isEmpty()) {
            out.add("UPDATE");
        }
        return new ArrayList<>(out);
    }
}
