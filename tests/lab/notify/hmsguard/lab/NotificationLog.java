package hmsguard.lab;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore.HMSHandler;
import org.apache.hadoop.hive.metastore.MetaStoreEventListener;
import org.apache.hadoop.hive.metastore.MetaStoreEventListenerConstants;
import org.apache.hadoop.hive.metastore.RawStore;
import org.apache.hadoop.hive.metastore.RawStoreProxy;
import org.apache.hadoop.hive.metastore.ReplChangeManager;
import org.apache.hadoop.hive.metastore.Warehouse;
import org.apache.hadoop.hive.metastore.api.Database;
import org.apache.hadoop.hive.metastore.api.Function;
import org.apache.hadoop.hive.metastore.api.Index;
import org.apache.hadoop.hive.metastore.api.MetaException;
import org.apache.hadoop.hive.metastore.api.NotificationEvent;
import org.apache.hadoop.hive.metastore.api.Partition;
import org.apache.hadoop.hive.metastore.api.Table;
import org.apache.hadoop.hive.metastore.events.AddIndexEvent;
import org.apache.hadoop.hive.metastore.events.AddPartitionEvent;
import org.apache.hadoop.hive.metastore.events.AlterIndexEvent;
import org.apache.hadoop.hive.metastore.events.AlterPartitionEvent;
import org.apache.hadoop.hive.metastore.events.AlterTableEvent;
import org.apache.hadoop.hive.metastore.events.CreateDatabaseEvent;
import org.apache.hadoop.hive.metastore.events.CreateFunctionEvent;
import org.apache.hadoop.hive.metastore.events.CreateTableEvent;
import org.apache.hadoop.hive.metastore.events.DropDatabaseEvent;
import org.apache.hadoop.hive.metastore.events.DropFunctionEvent;
import org.apache.hadoop.hive.metastore.events.DropIndexEvent;
import org.apache.hadoop.hive.metastore.events.DropPartitionEvent;
import org.apache.hadoop.hive.metastore.events.DropTableEvent;
import org.apache.hadoop.hive.metastore.events.InsertEvent;
import org.apache.hadoop.hive.metastore.events.ListenerEvent;
import org.apache.hadoop.hive.metastore.messaging.EventMessage.EventType;
import org.apache.hadoop.hive.metastore.messaging.MessageFactory;
import org.apache.hadoop.hive.metastore.messaging.PartitionFiles;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The lab's notification log: a metastore event listener that records every metadata change in
 * the metastore's own NOTIFICATION_LOG table, the way Hive's DbNotificationListener (hcatalog,
 * not shipped in pyspark's jars) does, so that the metastore's get_next_notification and
 * get_current_notificationEventId serve the events. Lab only: hms-guard does not need it.
 *
 * Per event: the message is built with the metastore's MessageFactory (JSON by default,
 * hive.metastore.event.message.factory), the event type is Hive's name (EventType, e.g.
 * CREATE_TABLE), eventTime is in seconds, and the event goes to RawStore.addNotificationEvent,
 * which assigns the id from NOTIFICATION_SEQUENCE. Registered in
 * hive.metastore.transactional.event.listeners, the listener runs inside the metastore's JDO
 * transaction of the change (HMSHandler.getMSForConf is that thread's store), so a change and its
 * event commit or roll back together. Registered in hive.metastore.event.listeners instead, it
 * runs after the commit in a transaction of its own, and skips failed changes.
 *
 * A cleaner thread deletes events older than hive.metastore.event.db.listener.timetolive
 * (RawStore.cleanNotificationEvents), every hmsguard.lab.notification.clean.interval.ms
 * (Hive 2.3 sleeps a fixed minute; the lab shortens it to see purges in a test). Both are read
 * at start: Hive's listener also follows set_meta_conf of the time to live, which 2.3's
 * metastore refuses (the key is not among its metaConfVars), so this one does not.
 */
public class NotificationLog extends MetaStoreEventListener {
  private static final Logger LOG = LoggerFactory.getLogger(NotificationLog.class);

  /** The lab's own property: milliseconds between two cleaner runs. */
  public static final String CLEAN_INTERVAL_MS = "hmsguard.lab.notification.clean.interval.ms";

  /** One cleaner per metastore process, whatever the number of listener instances. */
  private static Cleaner cleaner;
  /** As in Hive: one writer at a time for the events of this process. */
  private static final Object WRITE_LOCK = new Object();

  private final HiveConf conf;
  private final MessageFactory messages;

  public NotificationLog(Configuration config) throws MetaException {
    super(config);
    // The metastore constructs its listeners with its HiveConf.
    this.conf = (HiveConf) config;
    this.messages = MessageFactory.getInstance();
    startCleaner(conf);
  }

  private static synchronized void startCleaner(HiveConf conf) throws MetaException {
    if (cleaner == null) {
      // A store of its own (as Hive does): the cleaner runs outside any call's thread.
      RawStore rs = RawStoreProxy.getProxy(conf, conf,
          conf.getVar(HiveConf.ConfVars.METASTORE_RAW_STORE_IMPL), 999999);
      cleaner = new Cleaner(rs,
          HiveConf.getTimeVar(conf, HiveConf.ConfVars.METASTORE_EVENT_DB_LISTENER_TTL,
              TimeUnit.SECONDS),
          conf.getLong(CLEAN_INTERVAL_MS, 60_000L));
      cleaner.start();
    }
  }

  // ---- databases (Hive 2.3 has no alter-database event)

  @Override
  public void onCreateDatabase(CreateDatabaseEvent e) throws MetaException {
    Database db = e.getDatabase();
    record(e, EventType.CREATE_DATABASE, db.getName(), null,
        messages.buildCreateDatabaseMessage(db).toString());
  }

  @Override
  public void onDropDatabase(DropDatabaseEvent e) throws MetaException {
    Database db = e.getDatabase();
    record(e, EventType.DROP_DATABASE, db.getName(), null,
        messages.buildDropDatabaseMessage(db).toString());
  }

  // ---- tables

  @Override
  public void onCreateTable(CreateTableEvent e) throws MetaException {
    Table t = e.getTable();
    record(e, EventType.CREATE_TABLE, t.getDbName(), t.getTableName(),
        messages.buildCreateTableMessage(t, files(t.getSd().getLocation()).iterator())
            .toString());
  }

  @Override
  public void onAlterTable(AlterTableEvent e) throws MetaException {
    Table after = e.getNewTable();
    record(e, EventType.ALTER_TABLE, after.getDbName(), after.getTableName(),
        messages.buildAlterTableMessage(e.getOldTable(), after).toString());
  }

  @Override
  public void onDropTable(DropTableEvent e) throws MetaException {
    Table t = e.getTable();
    record(e, EventType.DROP_TABLE, t.getDbName(), t.getTableName(),
        messages.buildDropTableMessage(t).toString());
  }

  // ---- partitions

  @Override
  public void onAddPartition(AddPartitionEvent e) throws MetaException {
    Table t = e.getTable();
    List<PartitionFiles> files = new ArrayList<>();
    for (Iterator<Partition> it = e.getPartitionIterator(); it.hasNext(); ) {
      Partition p = it.next();
      files.add(new PartitionFiles(Warehouse.makePartName(t.getPartitionKeys(), p.getValues()),
          files(p.getSd().getLocation()).iterator()));
    }
    record(e, EventType.ADD_PARTITION, t.getDbName(), t.getTableName(),
        messages.buildAddPartitionMessage(t, e.getPartitionIterator(), files.iterator())
            .toString());
  }

  @Override
  public void onAlterPartition(AlterPartitionEvent e) throws MetaException {
    Partition before = e.getOldPartition();
    record(e, EventType.ALTER_PARTITION, before.getDbName(), before.getTableName(),
        messages.buildAlterPartitionMessage(e.getTable(), before, e.getNewPartition())
            .toString());
  }

  @Override
  public void onDropPartition(DropPartitionEvent e) throws MetaException {
    Table t = e.getTable();
    record(e, EventType.DROP_PARTITION, t.getDbName(), t.getTableName(),
        messages.buildDropPartitionMessage(t, e.getPartitionIterator()).toString());
  }

  // ---- inserts (fire_listener_event), functions, indexes

  @Override
  public void onInsert(InsertEvent e) throws MetaException {
    List<String> files = e.getFiles();
    List<String> sums = e.getFileChecksums();
    List<String> encoded = new ArrayList<>();
    for (int i = 0; i < files.size(); i++) {
      String sum = sums != null && i < sums.size() ? sums.get(i) : null;
      encoded.add(ReplChangeManager.encodeFileUri(files.get(i), sum));
    }
    record(e, EventType.INSERT, e.getDb(), e.getTable(),
        messages.buildInsertMessage(e.getDb(), e.getTable(), e.getPartitionKeyValues(),
            encoded.iterator()).toString());
  }

  @Override
  public void onCreateFunction(CreateFunctionEvent e) throws MetaException {
    Function f = e.getFunction();
    record(e, EventType.CREATE_FUNCTION, f.getDbName(), null,
        messages.buildCreateFunctionMessage(f).toString());
  }

  @Override
  public void onDropFunction(DropFunctionEvent e) throws MetaException {
    Function f = e.getFunction();
    record(e, EventType.DROP_FUNCTION, f.getDbName(), null,
        messages.buildDropFunctionMessage(f).toString());
  }

  @Override
  public void onAddIndex(AddIndexEvent e) throws MetaException {
    Index i = e.getIndex();
    record(e, EventType.CREATE_INDEX, i.getDbName(), null,
        messages.buildCreateIndexMessage(i).toString());
  }

  @Override
  public void onAlterIndex(AlterIndexEvent e) throws MetaException {
    Index before = e.getOldIndex();
    record(e, EventType.ALTER_INDEX, before.getDbName(), null,
        messages.buildAlterIndexMessage(before, e.getNewIndex()).toString());
  }

  @Override
  public void onDropIndex(DropIndexEvent e) throws MetaException {
    Index i = e.getIndex();
    record(e, EventType.DROP_INDEX, i.getDbName(), null,
        messages.buildDropIndexMessage(i).toString());
  }

  // ---- the writing

  /**
   * Stores one event through the calling thread's RawStore (inside the change's transaction
   * when registered as a transactional listener); the store assigns its id, which is handed
   * to later listeners as Hive does (DB_NOTIFICATION_EVENT_ID_KEY_NAME).
   */
  private void record(ListenerEvent source, EventType type, String db, String table,
      String message) throws MetaException {
    if (!source.getStatus()) {
      return; // a failed change (only seen as a non-transactional listener)
    }
    NotificationEvent event = new NotificationEvent(0, now(), type.toString(), message);
    event.setDbName(db);
    if (table != null) {
      event.setTableName(table);
    }
    event.setMessageFormat(messages.getMessageFormat());
    synchronized (WRITE_LOCK) {
      HMSHandler.getMSForConf(conf).addNotificationEvent(event);
    }
    if (event.isSetEventId()) {
      source.putParameter(MetaStoreEventListenerConstants.DB_NOTIFICATION_EVENT_ID_KEY_NAME,
          Long.toString(event.getEventId()));
    }
    LOG.debug("notification {} {} {}.{}", event.getEventId(), type, db, table);
  }

  /** Seconds since the epoch, as the NOTIFICATION_LOG's EVENT_TIME column holds them. */
  private static int now() {
    return (int) Math.min(System.currentTimeMillis() / 1000, Integer.MAX_VALUE);
  }

  /**
   * The data files directly under a location (no directories, no hidden or _-prefixed
   * files), each as Hive encodes it: uri#checksum when the file system has a checksum.
   * A location that does not exist has no files.
   */
  private List<String> files(String location) throws MetaException {
    List<String> out = new ArrayList<>();
    if (location == null) {
      return out;
    }
    try {
      Path dir = new Path(location);
      FileSystem fs = dir.getFileSystem(conf);
      for (FileStatus f : fs.listStatus(dir)) {
        String name = f.getPath().getName();
        if (f.isFile() && !name.startsWith("_") && !name.startsWith(".")) {
          out.add(ReplChangeManager.encodeFileUri(f.getPath().toString(),
              ReplChangeManager.getChksumString(f.getPath(), fs)));
        }
      }
    } catch (FileNotFoundException e) {
      return out;
    } catch (IOException e) {
      throw new MetaException("listing " + location + " for the notification log: " + e);
    }
    return out;
  }

  /** Deletes the events older than the time to live, again and again (a daemon thread). */
  private static final class Cleaner extends Thread {
    private final RawStore rs;
    private final long intervalMs;
    private final int ttlSeconds;

    Cleaner(RawStore rs, long ttlSeconds, long intervalMs) {
      super("hmsguard-lab-notification-cleaner");
      this.rs = rs;
      this.intervalMs = Math.max(100L, intervalMs);
      this.ttlSeconds = (int) Math.min(ttlSeconds, Integer.MAX_VALUE);
      setDaemon(true);
    }

    @Override
    public void run() {
      LOG.info("notification log cleaner: time to live {}s, every {} ms", ttlSeconds,
          intervalMs);
      while (true) {
        try {
          rs.cleanNotificationEvents(ttlSeconds);
        } catch (RuntimeException e) {
          LOG.warn("notification log cleaner failed", e);
        }
        try {
          Thread.sleep(intervalMs);
        } catch (InterruptedException e) {
          return;
        }
      }
    }
  }
}
