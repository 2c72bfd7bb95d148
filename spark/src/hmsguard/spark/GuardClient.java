package hmsguard.spark;

import java.io.IOException;
import java.net.URI;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.security.PrivilegedExceptionAction;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.thrift.TApplicationException;
import org.apache.thrift.TException;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.protocol.TCompactProtocol;
import org.apache.thrift.protocol.TField;
import org.apache.thrift.protocol.TList;
import org.apache.thrift.protocol.TMessage;
import org.apache.thrift.protocol.TMessageType;
import org.apache.thrift.protocol.TProtocol;
import org.apache.thrift.protocol.TProtocolUtil;
import org.apache.thrift.protocol.TStruct;
import org.apache.thrift.protocol.TType;
import org.apache.thrift.transport.TSSLTransportFactory;
import org.apache.thrift.transport.TSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.layered.TFramedTransport;

/**
 * One connection to hms-guard, opened the way the session's own metastore client opens its
 * connection (the same {@code hive.metastore.uris} in order, TLS, SASL/Kerberos, framing and
 * protocol settings, {@code set_ugi} as the session's user), asking {@code hms_guard_authorize}.
 * Not thread-safe: {@link Guard} serialises its use.
 */
final class GuardClient implements AutoCloseable {
    /** The method hms-guard answers itself; no metastore has it. */
    static final String METHOD = "hms_guard_authorize";
    /** Longest wait for any one answer, whatever the metastore timeout says. */
    static final int MAX_TIMEOUT_MS = 120_000;
    /** Largest answer read (a message and a short text). */
    static final int MAX_STRING = 64 * 1024;

    private final TTransport transport;
    private final TProtocol protocol;
    private final String uri;
    private int seqid;

    private GuardClient(TTransport transport, TProtocol protocol, String uri) {
        this.transport = transport;
        this.protocol = protocol;
        this.uri = uri;
    }

    String uri() {
        return uri;
    }

    /**
     * Connects to the first of {@code uris} that answers, as {@code ugi}. Throws with every
     * address's failure when none does.
     */
    static GuardClient connect(Configuration conf, UserGroupInformation ugi) throws IOException {
        String uris = conf.get("hive.metastore.uris", "").trim();
        if (uris.isEmpty()) {
            throw new IOException("hive.metastore.uris is not set: the session has no metastore"
                + " address to reach hms-guard at");
        }
        List<String> failures = new ArrayList<>();
        for (String raw : uris.split(",")) {
            String u = raw.trim();
            if (u.isEmpty()) {
                continue;
            }
            try {
                return open(conf, ugi, u);
            } catch (Exception e) {
                failures.add(u + ": " + e);
            }
        }
        throw new IOException("no metastore address answered: " + String.join("; ", failures));
    }

    private static int timeoutMs(Configuration conf) {
        long ms = conf.getTimeDuration("hive.metastore.client.socket.timeout", 600_000L,
            java.util.concurrent.TimeUnit.MILLISECONDS);
        if (conf.get("hive.metastore.client.socket.timeout", "").matches("\\d+")) {
            ms = Long.parseLong(conf.get("hive.metastore.client.socket.timeout")) * 1000L;
        }
        return (int) Math.max(1_000L, Math.min(ms, MAX_TIMEOUT_MS));
    }

    private static GuardClient open(Configuration conf, UserGroupInformation ugi, String raw)
            throws Exception {
        URI u = new URI(raw);
        if (!"thrift".equals(u.getScheme()) || u.getHost() == null || u.getPort() < 0) {
            throw new IOException("not a thrift://HOST:PORT address");
        }
        String host = u.getHost();
        int port = u.getPort();
        int timeout = timeoutMs(conf);
        TTransport t;
        if (conf.getBoolean("hive.metastore.use.SSL", false)) {
            TSSLTransportFactory.TSSLTransportParameters p =
                new TSSLTransportFactory.TSSLTransportParameters();
            String trust = conf.get("hive.metastore.truststore.path", "");
            if (!trust.isEmpty()) {
                p.setTrustStore(trust, conf.get("hive.metastore.truststore.password", ""));
            }
            String key = conf.get("hive.metastore.keystore.path", "");
            if (!key.isEmpty()) {
                p.setKeyStore(key, conf.get("hive.metastore.keystore.password", ""));
            }
            t = TSSLTransportFactory.getClientSocket(host, port, timeout, p);
        } else {
            t = new TSocket(host, port, timeout);
        }
        boolean sasl = conf.getBoolean("hive.metastore.sasl.enabled", false);
        if (sasl) {
            t = Sasl.wrap(conf, host, t);
        }
        if (conf.getBoolean("hive.metastore.thrift.framed.transport.enabled", false)) {
            t = new TFramedTransport(t);
        }
        TTransport opened = t;
        if (sasl) {
            ugi.doAs((PrivilegedExceptionAction<Void>) () -> {
                opened.open();
                return null;
            });
        } else if (!opened.isOpen()) {
            opened.open();
        }
        TProtocol proto = conf.getBoolean("hive.metastore.thrift.compact.protocol.enabled", false)
            ? new TCompactProtocol(opened) : new TBinaryProtocol(opened);
        GuardClient c = new GuardClient(opened, proto, raw);
        // As Hive's client: the session's user and groups, unless SASL already names it.
        if (!sasl && conf.getBoolean("hive.metastore.execute.setugi", true)) {
            try {
                c.setUgi(ugi.getShortUserName(), Arrays.asList(ugi.getGroupNames()));
            } catch (Exception e) {
                c.close();
                throw e;
            }
        }
        return c;
    }

    private void setUgi(String user, List<String> groups) throws TException {
        int seq = ++seqid;
        protocol.writeMessageBegin(new TMessage("set_ugi", TMessageType.CALL, seq));
        protocol.writeStructBegin(new TStruct("set_ugi_args"));
        protocol.writeFieldBegin(new TField("user_name", TType.STRING, (short) 1));
        protocol.writeString(user);
        protocol.writeFieldEnd();
        protocol.writeFieldBegin(new TField("group_names", TType.LIST, (short) 2));
        protocol.writeListBegin(new TList(TType.STRING, groups.size()));
        for (String g : groups) {
            protocol.writeString(g);
        }
        protocol.writeListEnd();
        protocol.writeFieldEnd();
        protocol.writeFieldStop();
        protocol.writeStructEnd();
        protocol.writeMessageEnd();
        protocol.getTransport().flush();
        Answer a = readAnswer("set_ugi", seq, false);
        if (a.error != null) {
            throw new TException("set_ugi refused: " + a.error);
        }
    }

    /** hms-guard's answer: {@code allowed} with what decided, or the refusal's message. */
    static final class Answer {
        final String allowed;
        final String error;

        Answer(String allowed, String error) {
            this.allowed = allowed;
            this.error = error;
        }
    }

    /** Asks one question; an answer hms-guard gave (allowed or refused), or throws. */
    Answer ask(Question q, String client) throws TException {
        int seq = ++seqid;
        protocol.writeMessageBegin(new TMessage(METHOD, TMessageType.CALL, seq));
        protocol.writeStructBegin(new TStruct(METHOD + "_args"));
        writeString(1, "action", q.action);
        writeString(2, "db", q.db);
        writeString(3, "table", q.table);
        writeString(4, "path", q.path);
        protocol.writeFieldBegin(new TField("privileges", TType.LIST, (short) 5));
        protocol.writeListBegin(new TList(TType.STRING, q.privileges.size()));
        for (String p : q.privileges) {
            protocol.writeString(p);
        }
        protocol.writeListEnd();
        protocol.writeFieldEnd();
        writeString(6, "client", client);
        protocol.writeFieldStop();
        protocol.writeStructEnd();
        protocol.writeMessageEnd();
        protocol.getTransport().flush();
        return readAnswer(METHOD, seq, true);
    }

    private void writeString(int id, String name, String v) throws TException {
        if (v == null) {
            return;
        }
        protocol.writeFieldBegin(new TField(name, TType.STRING, (short) id));
        protocol.writeString(v);
        protocol.writeFieldEnd();
    }

    /** Reads the reply to call {@code seq}: field 0 (a string when {@code stringResult}), or
     * the declared MetaException (field 1), or a TApplicationException. */
    private Answer readAnswer(String method, int seq, boolean stringResult) throws TException {
        TMessage m = protocol.readMessageBegin();
        if (m.type == TMessageType.EXCEPTION) {
            TApplicationException x = TApplicationException.readFrom(protocol);
            protocol.readMessageEnd();
            throw x;
        }
        if (m.seqid != seq || !method.equals(m.name)) {
            throw new TException("out-of-order reply " + m.name + "#" + m.seqid + " to "
                + method + "#" + seq);
        }
        String ok = null;
        String err = null;
        boolean set = false;
        protocol.readStructBegin();
        while (true) {
            TField f = protocol.readFieldBegin();
            if (f.type == TType.STOP) {
                break;
            }
            if (f.id == 0) {
                set = true;
                if (stringResult && f.type == TType.STRING) {
                    ok = bounded(protocol.readString());
                } else {
                    TProtocolUtil.skip(protocol, f.type);
                    ok = "";
                }
            } else if (f.id == 1 && f.type == TType.STRUCT) {
                err = readMessageField();
            } else {
                TProtocolUtil.skip(protocol, f.type);
            }
            protocol.readFieldEnd();
        }
        protocol.readStructEnd();
        protocol.readMessageEnd();
        if (err != null) {
            return new Answer(null, err);
        }
        if (!set && stringResult) {
            throw new TException(method + " returned no result");
        }
        return new Answer(ok == null ? "" : ok, null);
    }

    private String readMessageField() throws TException {
        String msg = "";
        protocol.readStructBegin();
        while (true) {
            TField f = protocol.readFieldBegin();
            if (f.type == TType.STOP) {
                break;
            }
            if (f.id == 1 && f.type == TType.STRING) {
                msg = bounded(protocol.readString());
            } else {
                TProtocolUtil.skip(protocol, f.type);
            }
            protocol.readFieldEnd();
        }
        protocol.readStructEnd();
        return msg;
    }

    private static String bounded(String s) {
        return s.length() > MAX_STRING ? s.substring(0, MAX_STRING) + "…" : s;
    }

    @Override
    public void close() {
        transport.close();
    }
}
