package hmsguard.spark;

import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Properties;
import java.util.Set;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;

import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * hms-guard-spark: {@code spark.sql.extensions=hmsguard.spark.GuardExtension}. Adds a check
 * rule that runs on every analysed plan, before anything executes: each write it finds (and
 * each read by path) is put to hms-guard, at the session's own {@code hive.metastore.uris},
 * as the session's user; a refusal raises {@link AccessDenied} with hms-guard's message.
 *
 * <p>Settings (Spark configuration): {@code spark.hmsguard.unguardedCatalogs} — comma-separated
 * v2 catalogs that are not the metastore's (JDBC…), whose writes are not asked about.
 */
public final class GuardExtension extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
    /** The Spark version the jar was compiled against (build.properties, by the build). */
    static final String BUILT_FOR = buildProperty("spark.version");
    static final String VERSION = buildProperty("version");

    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectCheckRule(new AbstractFunction1<SparkSession,
                scala.Function1<LogicalPlan, BoxedUnit>>() {
            @Override
            public scala.Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
                checkVersion(session.version());
                Set<String> unguarded = new HashSet<>();
                String conf = session.sparkContext().getConf()
                    .get("spark.hmsguard.unguardedCatalogs", "");
                Arrays.stream(conf.split(",")).map(String::trim).filter(s -> !s.isEmpty())
                    .forEach(unguarded::add);
                Guard guard = Guard.of(session);
                return new AbstractFunction1<LogicalPlan, BoxedUnit>() {
                    @Override
                    public BoxedUnit apply(LogicalPlan plan) {
                        guard.check(WriteCheck.questions(session, unguarded, plan));
                        return BoxedUnit.UNIT;
                    }
                };
            }
        });
        return BoxedUnit.UNIT;
    }

    /** The plan classes differ between Spark minor versions: refuse to run on another one. */
    static void checkVersion(String running) {
        if (!majorMinor(running).equals(majorMinor(BUILT_FOR))) {
            throw new IllegalStateException("hms-guard-spark " + VERSION + " was built against Spark "
                + BUILT_FOR + " and cannot check the plans of Spark " + running
                + "; build it against this Spark (spark/build.sh)");
        }
    }

    static String majorMinor(String v) {
        String[] p = v.split("[.-]");
        return p.length >= 2 ? p[0] + "." + p[1] : v;
    }

    private static String buildProperty(String key) {
        Properties p = new Properties();
        try (InputStream in = GuardExtension.class.getResourceAsStream("build.properties")) {
            if (in == null) {
                throw new IllegalStateException("hms-guard-spark: build.properties is missing"
                    + " from the jar");
            }
            p.load(in);
        } catch (IOException e) {
            throw new IllegalStateException("hms-guard-spark: build.properties unreadable: " + e, e);
        }
        String v = p.getProperty(key);
        if (v == null) {
            throw new IllegalStateException("hms-guard-spark: build.properties lacks " + key);
        }
        return v;
    }
}
