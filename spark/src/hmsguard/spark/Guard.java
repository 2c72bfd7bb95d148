package hmsguard.spark;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.spark.sql.SparkSession;

/**
 * Asks hms-guard the questions of one plan, as the session's current user (Hadoop's UGI, the
 * user the session's metastore client names). One connection per user, kept for the session
 * (at most {@link #MAX_USERS}); a broken connection is opened again once per question.
 */
final class Guard {
    static final int MAX_USERS = 16;

    private final SparkSession session;
    private final String client;
    private final Map<String, GuardClient> clients = new LinkedHashMap<String, GuardClient>(
            16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, GuardClient> e) {
            if (size() > MAX_USERS) {
                e.getValue().close();
                return true;
            }
            return false;
        }
    };

    private Guard(SparkSession session) {
        this.session = session;
        this.client = "hms-guard-spark/" + GuardExtension.VERSION + " spark/" + session.version();
    }

    static Guard of(SparkSession session) {
        return new Guard(session);
    }

    /** Asks every question; throws {@link AccessDenied} at the first refusal or failure. */
    synchronized void check(Set<Question> questions) {
        if (questions.isEmpty()) {
            return;
        }
        UserGroupInformation ugi;
        try {
            ugi = UserGroupInformation.getCurrentUser();
        } catch (Exception e) {
            throw new AccessDenied("hms-guard-spark: the session's user is unknown (" + e
                + "); writes are refused");
        }
        String user = ugi.getShortUserName();
        for (Question q : questions) {
            GuardClient.Answer a = ask(ugi, user, q);
            if (a.error != null) {
                throw new AccessDenied(a.error);
            }
        }
    }

    private GuardClient.Answer ask(UserGroupInformation ugi, String user, Question q) {
        Exception last = null;
        for (int attempt = 0; attempt < 2; attempt++) {
            GuardClient c = clients.get(user);
            try {
                if (c == null) {
                    Configuration conf = session.sessionState().newHadoopConf();
                    c = GuardClient.connect(conf, ugi);
                    clients.put(user, c);
                }
                return c.ask(q, client);
            } catch (Exception e) {
                last = e;
                if (c != null) {
                    c.close();
                }
                clients.remove(user);
                if (e instanceof org.apache.thrift.TApplicationException) {
                    break; // hms-guard answered: asking again changes nothing
                }
            }
        }
        throw new AccessDenied("hms-guard-spark: could not ask hms-guard whether " + user
            + " may " + q.what + " (" + last + "); refused");
    }
}
