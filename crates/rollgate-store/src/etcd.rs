//! The etcd store: [`MetaStore`] over `etcd-client` (etcd v3 API, served by
//! etcd 3.4 and later). Reads are linearizable (etcd's default). Limits are
//! checked here, before a request is sent, so every store refuses the same
//! inputs the same way.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client as ec;

use super::{
    CompareOp, CompareTarget, EventKind, KeyValue, LeaseId, Limits, Listing, MetaStore, OpResponse, Revision,
    StoreError, StoreOptions, Txn, TxnOp, TxnResponse, WatchBatch, WatchEvent, WatchStream,
};
use crate::engine::MAX_TTL_S;

/// A connection to an etcd cluster: one client per member, requests to one
/// of them (the preferred member) at a time.
///
/// Not `etcd-client`'s balanced channel over all endpoints: it keeps
/// routing requests to a member that is down (its connection refused, or
/// accepted and closed), so with one member of three dead about two thirds
/// of the requests failed (`requests_succeed_with_one_member_of_three_dead`).
/// Here a request that cannot reach its member moves the preference to the
/// next one and is repeated there (after a short pause that grows, so an
/// election can finish), within the request timeout: any request that is
/// safe to repeat (reads, lease calls), a guarded transaction (repeated
/// after an apply whose answer was lost, it finds its guard false, which a
/// guarded writer handles as a concurrent change), and any request that was
/// not sent (the connection refused or closed before it left). An unguarded
/// write whose member went away while it was sent is not repeated (it may
/// have been applied): it fails as unavailable, and the next request goes
/// to the next member.
#[derive(Clone)]
pub(crate) struct EtcdStore {
    clients: std::sync::Arc<[ec::Client]>,
    preferred: std::sync::Arc<AtomicUsize>,
    describe: String,
    limits: Limits,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore({})", self.describe)
    }
}

/// Whether a request may be repeated on another member after an error
/// that leaves open whether it was applied.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// A read, a lease renewal or revocation: repeating it changes nothing.
    Safe,
    /// An unguarded write: repeated only when nothing was sent.
    OnlyUnsent,
}

impl EtcdStore {
    pub(crate) async fn connect(endpoints: &[String], options: StoreOptions) -> Result<Self, StoreError> {
        let describe = format!("etcd:{}", endpoints.join(","));
        let security = &options.etcd;
        let scheme = if security.tls() { "https" } else { "http" };
        let request_timeout = Duration::from_millis(options.request_timeout_ms.max(1));
        let mut connect = ec::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(options.connect_timeout_ms.max(1)))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(ca) = &security.ca_pem {
            let mut tls = ec::TlsOptions::new().ca_certificate(ec::Certificate::from_pem(ca));
            if let Some((cert, key)) = &security.client_cert_pem {
                tls = tls.identity(ec::Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        if let Some((user, password)) = &security.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        let mut clients = Vec::with_capacity(endpoints.len());
        let mut first_error = None;
        for e in endpoints {
            // Without authentication a connection is made lazily, at a
            // member's first request; with it, connecting authenticates, so a
            // member that is down now is left out (the others serve).
            match ec::Client::connect([format!("{scheme}://{e}")], Some(connect.clone())).await {
                Ok(client) => clients.push(client),
                Err(err) => {
                    first_error.get_or_insert(map_err(&describe, err));
                }
            }
        }
        if clients.is_empty() {
            return Err(first_error.unwrap_or_else(|| StoreError::Backend {
                endpoint: describe.clone(),
                reason: "no etcd endpoint given".into(),
            }));
        }
        Ok(EtcdStore {
            clients: clients.into(),
            preferred: std::sync::Arc::new(AtomicUsize::new(0)),
            describe,
            limits: options.limits,
            request_timeout,
        })
    }

    /// The preferred member's index and client.
    fn client(&self) -> (usize, ec::Client) {
        let i = self.preferred.load(Ordering::Acquire) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Member `i` could not be reached: the next request goes to the next one
    /// (unless another request moved on already).
    fn avoid(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self.preferred.compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Runs one request on member `i` with the request timeout; a timeout is
    /// "unavailable", and an unavailable member is avoided from now on.
    async fn call<T>(&self, i: usize, fut: impl Future<Output = Result<T, ec::Error>>) -> Result<T, StoreError> {
        self.attempt(i, self.request_timeout, fut).await.map_err(|(e, _)| e)
    }

    /// One attempt on member `i` within `within`: the error, and whether
    /// nothing was sent (the connection was refused).
    async fn attempt<T>(
        &self,
        i: usize,
        within: Duration,
        fut: impl Future<Output = Result<T, ec::Error>>,
    ) -> Result<T, (StoreError, bool)> {
        let e = match tokio::time::timeout(within, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let unsent = nothing_sent(&e);
                (map_err(&self.describe, e), unsent)
            }
            Err(_) => {
                let reason = format!("no answer within {} ms", within.as_millis());
                (StoreError::Unavailable { endpoint: self.describe.clone(), reason }, false)
            }
        };
        if matches!(e.0, StoreError::Unavailable { .. }) {
            self.avoid(i);
        }
        Err(e)
    }

    /// Runs `op` on the preferred member, and again on the next ones while
    /// they cannot be reached and `repeat` allows (each member at most
    /// twice), all within the request timeout.
    async fn retrying<T, F, Fut>(&self, repeat: Repeat, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(ec::Client) -> Fut,
        Fut: Future<Output = Result<T, ec::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        // A member that does not answer (paused, cut off) must leave time
        // for the others.
        let per_attempt = match repeat {
            Repeat::Safe => (self.request_timeout / 2).max(Duration::from_millis(1)),
            Repeat::OnlyUnsent => self.request_timeout,
        };
        let mut last = None;
        let mut pause = Duration::from_millis(20);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt >= self.clients.len() {
                // Every member was tried once: give an election time.
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let (i, client) = self.client();
            match self.attempt(i, left.min(per_attempt), op(client)).await {
                Ok(v) => return Ok(v),
                Err((e @ StoreError::Unavailable { .. }, unsent)) if repeat == Repeat::Safe || unsent => {
                    last = Some(e);
                }
                Err((e, _)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::Unavailable {
            endpoint: self.describe.clone(),
            reason: format!("no answer within {} ms", self.request_timeout.as_millis()),
        }))
    }
}

impl EtcdStore {
    /// Whether `from` is compacted away under `prefix` (a count-only read at it).
    async fn compacted_at(&self, prefix: &str, from: Revision) -> Result<bool, StoreError> {
        let at = ec::GetOptions::new().with_range(prefix_end(prefix)).with_revision(from.max(1)).with_count_only();
        let read = self.retrying(Repeat::Safe, |c| {
            let (prefix, at) = (prefix.to_string(), at.clone());
            async move { c.kv_client().get(prefix, Some(at)).await }
        });
        match read.await {
            Err(StoreError::Backend { reason, .. }) if reason.contains("required revision has been compacted") => {
                Ok(true)
            }
            Err(StoreError::Backend { reason, .. }) if reason.contains("future revision") => Ok(false),
            Err(e) => Err(e),
            Ok(_) => Ok(false),
        }
    }
}

/// Most attempts of one request (bounded by the request timeout too).
const MAX_ATTEMPTS: usize = 12;

/// Whether the error says the request never left this process: the
/// connection to the member was refused or could not be made, or it closed
/// before the request was processed (hyper's `Canceled`: "a pending item was
/// dropped before ever being processed").
fn nothing_sent(e: &ec::Error) -> bool {
    let text = format!("{e:?}");
    ["tcp connect error", "ConnectionRefused", "ConnectError", "Canceled"].iter().any(|t| text.contains(t))
}

/// Maps a client error: anything that says the server could not be reached
/// is [`StoreError::Unavailable`].
fn map_err(endpoint: &str, e: ec::Error) -> StoreError {
    // gRPC status codes (stable numbers): Cancelled 1, Unknown 2,
    // DeadlineExceeded 4, Aborted 10, Unavailable 14.
    let unavailable = match &e {
        ec::Error::TransportError(_) | ec::Error::IoError(_) | ec::Error::WatchError(_) => true,
        ec::Error::GRpcStatus(s) => matches!(s.code() as i32, 1 | 2 | 4 | 10 | 14),
        ec::Error::LeaseKeepAliveError(m) => !m.contains("lease not found"),
        _ => false,
    };
    let lease_not_found = match &e {
        ec::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        ec::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    };
    let reason = format!("{e}{}", security_hint(&e.to_string()));
    if lease_not_found {
        // The caller fills in the id.
        StoreError::LeaseNotFound { lease: 0 }
    } else if unavailable {
        StoreError::Unavailable { endpoint: endpoint.to_string(), reason }
    } else {
        StoreError::Backend { endpoint: endpoint.to_string(), reason }
    }
}

/// What to do about an authentication or TLS failure, from etcd's message.
fn security_hint(message: &str) -> &'static str {
    if message.contains("user name is empty") || message.contains("user name not found") {
        " (etcd requires authentication: give --etcd-user with --etcd-password-file, or --etcd-cert with --etcd-key)"
    } else if message.contains("authentication failed") || message.contains("invalid user ID or password") {
        " (etcd refused the user or password: check --etcd-user and --etcd-password-file)"
    } else if message.contains("permission denied") {
        " (the etcd user lacks a role granting read and write on the cluster's keys)"
    } else if message.contains("BadCertificate") || message.contains("CertificateRequired") {
        " (etcd requires a client certificate of its CA: give --etcd-cert and --etcd-key)"
    } else if message.contains("UnknownIssuer") || message.contains("certificate") {
        " (TLS with etcd failed: --etcd-ca must be the CA of etcd's server certificate, which must name the address used)"
    } else if message.contains("InvalidContentType") || message.contains("corrupt message") {
        " (etcd does not speak TLS on this address: drop --etcd-ca or start etcd with TLS)"
    } else if message.contains("broken pipe") || message.contains("connection reset") {
        // TLS 1.3: a server that wants a client certificate may close the
        // connection before its alert reaches the client.
        " (etcd closed the connection: if it requires client certificates, give --etcd-cert and --etcd-key; otherwise check that it is up)"
    } else {
        ""
    }
}

/// Names the lease in a [`StoreError::LeaseNotFound`] from [`map_err`].
fn with_lease(e: StoreError, lease: LeaseId) -> StoreError {
    match e {
        StoreError::LeaseNotFound { .. } => StoreError::LeaseNotFound { lease },
        other => other,
    }
}

fn convert_kv(endpoint: &str, kv: &ec::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(kv.key()).map_err(|_| StoreError::Backend {
        endpoint: endpoint.to_string(),
        reason: format!("a key is not UTF-8: {:?}", String::from_utf8_lossy(kv.key())),
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn header_revision(endpoint: &str, header: Option<&ec::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend { endpoint: endpoint.to_string(), reason: "response without header".into() })
}

fn convert_op(op: &TxnOp) -> ec::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            let options = lease.map(|l| ec::PutOptions::new().with_lease(l));
            ec::TxnOp::put(key.as_str(), value.clone(), options)
        }
        TxnOp::Delete { key } => ec::TxnOp::delete(key.as_str(), None),
        TxnOp::Get { key } => ec::TxnOp::get(key.as_str(), None),
    }
}

fn convert_compare(c: &super::Compare) -> ec::Compare {
    let op = match c.op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Greater => ec::CompareOp::Greater,
        CompareOp::Less => ec::CompareOp::Less,
    };
    let key = c.key.as_str();
    match &c.target {
        CompareTarget::ModRevision(r) => ec::Compare::mod_revision(key, op, *r),
        CompareTarget::CreateRevision(r) => ec::Compare::create_revision(key, op, *r),
        CompareTarget::Version(v) => ec::Compare::version(key, op, *v),
        CompareTarget::Value(v) => ec::Compare::value(key, op, v.clone()),
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    // The smallest key greater than every key starting with `prefix` (etcd's range_end).
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait::async_trait]
impl MetaStore for EtcdStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.limits.check_key(key)?;
        let key = key.to_string();
        let resp = self
            .retrying(Repeat::Safe, |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        resp.kvs().first().map(|kv| convert_kv(&self.describe, kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        if !prefix.is_empty() {
            self.limits.check_key(prefix)?;
        }
        let max = self.limits.max_list_keys;
        let options = ec::GetOptions::new().with_range(prefix_end(prefix)).with_limit((max + 1) as i64);
        let resp = self
            .retrying(Repeat::Safe, |c| {
                let (prefix, options) = (prefix.to_string(), options.clone());
                async move { c.kv_client().get(prefix, Some(options)).await }
            })
            .await?;
        let revision = header_revision(&self.describe, resp.header())?;
        if resp.kvs().len() > max || resp.more() {
            return Err(StoreError::TooManyKeys { prefix: rollgate_util::shorten(prefix), max });
        }
        let kvs = resp.kvs().iter().map(|kv| convert_kv(&self.describe, kv)).collect::<Result<_, _>>()?;
        Ok(Listing { revision, kvs })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn.validate(&self.limits)?;
        let request = ec::Txn::new()
            .when(txn.compares.iter().map(convert_compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(convert_op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(convert_op).collect::<Vec<_>>());
        let lease = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::Put { lease: Some(l), .. } => Some(*l),
                _ => None,
            })
            .unwrap_or(0);
        let repeat = if txn.compares.is_empty() { Repeat::OnlyUnsent } else { Repeat::Safe };
        let resp = self
            .retrying(repeat, |c| {
                let request = request.clone();
                async move { c.kv_client().txn(request).await }
            })
            .await
            .map_err(|e| with_lease(e, lease))?;
        let revision = header_revision(&self.describe, resp.header())?;
        let mut responses = Vec::new();
        for r in resp.op_responses() {
            responses.push(match r {
                ec::TxnOpResponse::Put(_) => OpResponse::Put,
                ec::TxnOpResponse::Delete(d) => OpResponse::Delete { deleted: d.deleted().max(0) as u64 },
                ec::TxnOpResponse::Get(g) => {
                    OpResponse::Get(g.kvs().first().map(|kv| convert_kv(&self.describe, kv)).transpose()?)
                }
                ec::TxnOpResponse::Txn(_) => {
                    return Err(StoreError::Backend {
                        endpoint: self.describe.clone(),
                        reason: "unexpected nested transaction response".into(),
                    });
                }
            });
        }
        Ok(TxnResponse { succeeded: resp.succeeded(), revision, responses })
    }

    async fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<WatchStream, StoreError> {
        if !prefix.is_empty() {
            self.limits.check_key(prefix)?;
        }
        let mut options = ec::WatchOptions::new().with_range(prefix_end(prefix));
        if let Some(from) = from {
            options = options.with_start_revision(from.max(1));
        }
        // etcd accepts a watch from a compacted revision and cancels it in a
        // later message; a read at that revision tells at once.
        let compacted = match from {
            Some(from) => self.compacted_at(prefix, from).await?,
            None => false,
        };
        let (i, client) = self.client();
        let mut client = client.watch_client();
        let mut stream = self.call(i, client.watch(prefix, Some(options))).await?;
        // Wait for the server to accept the watch, so a returned stream is live.
        let mut first = self.call(i, stream.message()).await?;
        let describe = self.describe.clone();
        let requested = from.unwrap_or(0);
        while compacted && first.as_ref().is_some_and(|r| r.compact_revision() == 0 && !r.canceled()) {
            first = self.call(i, stream.message()).await?;
        }
        let first = match first {
            None => return Err(StoreError::Unavailable { endpoint: describe, reason: "watch stream closed".into() }),
            Some(resp) if resp.compact_revision() > 0 => {
                return Err(StoreError::Compacted { requested, compacted: resp.compact_revision() });
            }
            Some(resp) if resp.canceled() => {
                return Err(StoreError::Backend {
                    endpoint: describe,
                    reason: format!("watch refused: {}", resp.cancel_reason()),
                });
            }
            Some(resp) => resp,
        };
        struct Cursor {
            stream: ec::WatchStream,
            pending: std::collections::VecDeque<WatchBatch>,
            describe: String,
            requested: Revision,
            done: bool,
        }
        let mut cursor =
            Cursor { stream, pending: Default::default(), describe: describe.clone(), requested, done: false };
        cursor.pending.extend(batches(&describe, &first)?);
        Ok(Box::pin(futures::stream::unfold(cursor, |mut c| async move {
            loop {
                if let Some(b) = c.pending.pop_front() {
                    return Some((Ok(b), c));
                }
                if c.done {
                    return None;
                }
                match c.stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            c.done = true;
                            let err =
                                StoreError::Compacted { requested: c.requested, compacted: resp.compact_revision() };
                            return Some((Err(err), c));
                        }
                        if resp.canceled() {
                            c.done = true;
                            let err = StoreError::Unavailable {
                                endpoint: c.describe.clone(),
                                reason: format!("watch canceled by the server: {}", resp.cancel_reason()),
                            };
                            return Some((Err(err), c));
                        }
                        match batches(&c.describe, &resp) {
                            Ok(bs) => c.pending.extend(bs),
                            Err(e) => {
                                c.done = true;
                                return Some((Err(e), c));
                            }
                        }
                    }
                    Ok(None) => {
                        c.done = true;
                        let err = StoreError::Unavailable {
                            endpoint: c.describe.clone(),
                            reason: "watch stream ended".into(),
                        };
                        return Some((Err(err), c));
                    }
                    Err(e) => {
                        c.done = true;
                        return Some((Err(map_err(&c.describe, e)), c));
                    }
                }
            }
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let compact = self.retrying(Repeat::Safe, |c| async move {
            c.kv_client().compact(revision, Some(ec::CompactionOptions::new().with_physical())).await
        });
        match compact.await {
            Err(StoreError::Backend { reason, .. }) if reason.contains("required revision has been compacted") => {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    async fn lease_grant(&self, ttl_s: i64) -> Result<(LeaseId, i64), StoreError> {
        if !(1..=MAX_TTL_S).contains(&ttl_s) {
            return Err(StoreError::InvalidTtl { ttl_s, max: MAX_TTL_S });
        }
        // Repeated: a lease granted where the answer was lost expires unused.
        let resp = self.retrying(Repeat::Safe, |c| async move { c.lease_client().grant(ttl_s, None).await }).await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Backend { endpoint: self.describe.clone(), reason: resp.error().to_string() });
        }
        Ok((resp.id(), resp.ttl()))
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64, StoreError> {
        let renewal = self.retrying(Repeat::Safe, |c| async move {
            let (mut keeper, mut stream) = c.lease_client().keep_alive(id).await?;
            keeper.keep_alive().await?;
            stream.message().await
        });
        match renewal.await.map_err(|e| with_lease(e, id))? {
            Some(resp) if resp.ttl() > 0 => Ok(resp.ttl()),
            Some(_) => Err(StoreError::LeaseNotFound { lease: id }),
            None => Err(StoreError::Unavailable {
                endpoint: self.describe.clone(),
                reason: "keep-alive stream closed".into(),
            }),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), StoreError> {
        self.retrying(Repeat::Safe, |c| async move { c.lease_client().revoke(id).await })
            .await
            .map(|_| ())
            .map_err(|e| with_lease(e, id))
    }
}

/// Groups a response's events by revision.
fn batches(describe: &str, resp: &ec::WatchResponse) -> Result<Vec<WatchBatch>, StoreError> {
    let mut out: Vec<WatchBatch> = Vec::new();
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        // `event_type` panics on a type it does not know; a server must not crash us.
        let kind = match std::panic::catch_unwind(AssertUnwindSafe(|| ev.event_type())) {
            Ok(ec::EventType::Put) => EventKind::Put,
            Ok(ec::EventType::Delete) => EventKind::Delete,
            Err(_) => {
                return Err(StoreError::Backend {
                    endpoint: describe.to_string(),
                    reason: "watch event of unknown type".into(),
                });
            }
        };
        let kv = convert_kv(describe, kv)?;
        let revision = kv.mod_revision;
        let event = WatchEvent {
            kind,
            key: kv.key,
            value: if kind == EventKind::Put { kv.value } else { Vec::new() },
            revision,
            create_revision: if kind == EventKind::Put { kv.create_revision } else { 0 },
        };
        match out.last_mut() {
            Some(b) if b.revision == revision => b.events.push(event),
            _ => out.push(WatchBatch { revision, events: vec![event] }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::security_hint;

    /// The message a TLS 1.3 etcd that wants a client certificate may leave
    /// (its alert lost to the closed connection) still names the fix.
    #[test]
    fn a_connection_closed_during_tls_names_the_client_certificate() {
        let seen = "grpc request error: code: 'Unknown error', message: \"transport error\", source: \
                    tonic::transport::Error(Transport, hyper::Error(Io, Custom { kind: BrokenPipe, error: \
                    \"stream closed because of a broken pipe\" }))";
        assert!(security_hint(seen).contains("--etcd-cert and --etcd-key"), "{}", security_hint(seen));
        assert_eq!(security_hint("some other failure"), "");
    }
}
