//! Admission of pending connections (invariant I12): connections that have
//! not yet proved anything (a handshake in progress, an HTTP connection
//! waiting for its request) are bounded per source address and in total.
//! When a bound is reached, the oldest pending connection (of that source,
//! else of all) is evicted to make room, so sockets that connect and stay
//! silent never keep a real peer or client out: they only push each other
//! out, and each is bounded by its own timeout too.
//!
//! ```text
//! let admission = Admission::new(16, 256);
//! let mut ticket = admission.admit(peer_addr.ip());     // may evict the oldest
//! tokio::select! {
//!     r = handshake => ...,                              // drop the ticket when done
//!     _ = ticket.evicted() => ...,                       // pushed out by newer connections
//! }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Pending connections, bounded per source address and in total.
#[derive(Debug)]
pub struct Admission {
    state: Mutex<State>,
    per_source: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Oldest first.
    entries: BTreeMap<u64, Entry>,
    by_source: HashMap<IpAddr, VecDeque<u64>>,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    source: IpAddr,
    /// Dropped to evict: the ticket's receiver then resolves.
    _evict: oneshot::Sender<()>,
}

impl State {
    fn remove(&mut self, id: u64) -> bool {
        let Some(entry) = self.entries.remove(&id) else { return false };
        if let Some(ids) = self.by_source.get_mut(&entry.source) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_source.remove(&entry.source);
            }
        }
        true
    }
}

/// One admitted connection; dropping it leaves the pending set.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    evicted: oneshot::Receiver<()>,
}

impl Admission {
    /// At most `per_source` pending connections per source address and
    /// `total` in all (each at least 1).
    pub fn new(per_source: usize, total: usize) -> Arc<Self> {
        Arc::new(Admission { state: Mutex::default(), per_source: per_source.max(1), total: total.max(1) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `source`, evicting the oldest pending one of
    /// that source when it is at its bound, else the oldest of all when the
    /// total is reached.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Ticket {
        let mut state = self.lock();
        let oldest_of_source = state
            .by_source
            .get(&source)
            .filter(|ids| ids.len() >= self.per_source)
            .and_then(|ids| ids.front().copied());
        if let Some(id) = oldest_of_source {
            state.remove(id);
            state.evicted += 1;
        } else if state.entries.len() >= self.total
            && let Some(id) = state.entries.keys().next().copied()
        {
            state.remove(id);
            state.evicted += 1;
        }
        let id = state.next;
        state.next += 1;
        let (evict, evicted) = oneshot::channel();
        state.entries.insert(id, Entry { source, _evict: evict });
        state.by_source.entry(source).or_default().push_back(id);
        Ticket { id, admission: self.clone(), evicted }
    }

    /// Connections pending now.
    pub fn pending(&self) -> usize {
        self.lock().entries.len()
    }

    /// Connections evicted so far.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

impl Ticket {
    /// Resolves when newer connections pushed this one out.
    pub async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[tokio::test]
    async fn the_oldest_of_a_source_is_evicted_at_its_bound_then_the_oldest_of_all() {
        let a = Admission::new(2, 3);
        let mut first = a.admit(ip(1));
        let _second = a.admit(ip(1));
        let _third = a.admit(ip(1)); // source bound: `first` goes
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted()).await.unwrap();
        assert_eq!((a.pending(), a.evicted()), (2, 1));
        let _other = a.admit(ip(2));
        assert_eq!(a.pending(), 3);
        let _more = a.admit(ip(3)); // total bound: the oldest of all goes
        assert_eq!((a.pending(), a.evicted()), (3, 2));
        drop(_more);
        assert_eq!(a.pending(), 2, "a dropped ticket leaves");
    }
}
