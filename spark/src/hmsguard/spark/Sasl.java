package hmsguard.spark;

import java.io.IOException;
import java.util.Map;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.MetaStoreUtils;
import org.apache.hadoop.hive.shims.ShimLoader;
import org.apache.hadoop.hive.thrift.HadoopThriftAuthBridge;
import org.apache.thrift.transport.TTransport;

/** The SASL (Kerberos) transport, made by the same Hive classes the session's metastore client
 * uses, with the same principal and quality-of-protection settings. */
final class Sasl {
    private Sasl() {}

    static TTransport wrap(Configuration conf, String host, TTransport socket) throws IOException {
        HiveConf hive = new HiveConf(conf, HiveConf.class);
        String principal = hive.getVar(HiveConf.ConfVars.METASTORE_KERBEROS_PRINCIPAL);
        Map<String, String> props = MetaStoreUtils.getMetaStoreSaslProperties(hive);
        HadoopThriftAuthBridge.Client bridge = ShimLoader.getHadoopThriftAuthBridge().createClient();
        return bridge.createClientTransport(principal, host, "KERBEROS", null, socket, props);
    }
}
