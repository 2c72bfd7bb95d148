//! One bounded TTL cache with single-flight loading, for the facts caches (grants per
//! principal and per identity, objects).
//!
//! Bounded in entries: an insert into a full cache first drops expired entries, then, if still
//! full, an eighth of the entries (whichever come first); a cache never grows past its bound.
//! Single flight: concurrent misses of one key wait for one load instead of each calling the
//! metastore.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub struct TtlCache<K, V> {
    entries: DashMap<K, (V, Instant)>,
    loading: DashMap<K, Arc<tokio::sync::Mutex<()>>>,
    ttl: Duration,
    max_entries: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            entries: DashMap::new(),
            loading: DashMap::new(),
            ttl,
            max_entries: max_entries.max(1),
        }
    }

    /// A fresh entry.
    pub fn get(&self, k: &K) -> Option<V> {
        self.entries
            .get(k)
            .filter(|e| e.1.elapsed() < self.ttl)
            .map(|e| e.0.clone())
    }

    pub fn insert(&self, k: K, v: V) {
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&k) {
            self.entries.retain(|_, e| e.1.elapsed() < self.ttl);
            if self.entries.len() >= self.max_entries {
                let mut drop = (self.max_entries / 8).max(1);
                self.entries.retain(|_, _| {
                    if drop > 0 {
                        drop -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        self.entries.insert(k, (v, Instant::now()));
    }

    pub fn remove(&self, k: &K) {
        self.entries.remove(k);
    }

    pub fn clear(&self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The fresh entry, or the value `load` produces — loaded once however many callers miss
    /// at the same time (the others wait and take the loaded entry). `store` decides whether
    /// a loaded value is kept (e.g. not when an invalidation happened meanwhile). The bool is
    /// true on a hit.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        k: &K,
        load: F,
        store: impl FnOnce(&V) -> bool,
    ) -> Result<(V, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(k) {
            return Ok((v, true));
        }
        let gate = self
            .loading
            .entry(k.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let turn = gate.lock().await;
        // Whoever held the gate before may have loaded it.
        let result = match self.get(k) {
            Some(v) => Ok((v, true)),
            None => {
                let loaded = load().await;
                if let Ok(v) = &loaded {
                    if store(v) {
                        self.insert(k.clone(), v.clone());
                    }
                }
                loaded.map(|v| (v, false))
            }
        };
        drop(turn);
        drop(gate);
        // The gate goes with its last user (then only the map holds it).
        self.loading.remove_if(k, |_, g| Arc::strong_count(g) == 1);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_grows_past_its_bound() {
        let c = TtlCache::new(Duration::from_secs(60), 100);
        for i in 0..10_000 {
            c.insert(i, i);
            assert!(c.len() <= 100);
        }
        assert_eq!(c.get(&9_999), Some(9_999), "the newest entry stays");
    }

    #[test]
    fn entries_expire() {
        let c = TtlCache::new(Duration::from_millis(0), 10);
        c.insert(1, 1);
        assert_eq!(c.get(&1), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_load_once() {
        let c = Arc::new(TtlCache::<u32, u32>::new(Duration::from_secs(60), 10));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, loads) = (c.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_load(
                    &7,
                    || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(42)
                    },
                    |_| true,
                )
                .await
                .unwrap()
                .0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(c.loading.is_empty(), "gates are dropped");
    }
}
