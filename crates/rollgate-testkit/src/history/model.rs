//! The history's data: the operations a load records ([`Recorder`]), how
//! they ended, what the checker is told ([`CheckOptions`]) and what it finds
//! ([`Rule`], [`Violation`]), with the helpers every rule shares.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Store `value` (unique in the run), expiring after `ttl` when given.
    Put {
        /// The value.
        value: String,
        /// Its TTL.
        ttl: Option<Duration>,
    },
    /// Delete the key.
    Delete,
    /// Read the key at the service's default level.
    Get,
    /// Read the key at the linearizable level (rule 7 of the module docs).
    LinearizableGet,
}

impl OpKind {
    /// Whether it reads the key (at either level).
    pub fn is_read(&self) -> bool {
        matches!(self, OpKind::Get | OpKind::LinearizableGet)
    }

    /// Whether it writes the key (a put or a delete).
    pub fn is_write(&self) -> bool {
        !self.is_read()
    }
}

/// How an operation ended (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged. A write may carry the version the service gave it; a
    /// read carries the value it read (`None`: not found) and its version.
    Ok {
        /// A read's value.
        read: Option<String>,
        /// The write's or the read value's version, when the service says.
        version: Option<String>,
    },
    /// Definitely not applied.
    Failed(String),
    /// May or may not take effect, at any time after the start.
    Unknown(String),
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Its index in the history.
    pub id: usize,
    /// The client that made it (clients are sequential).
    pub client: usize,
    /// The key.
    pub key: String,
    /// What it asked.
    pub kind: OpKind,
    /// When it started, since the recorder's start.
    pub start: Duration,
    /// When its outcome was known.
    pub end: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// The node that answered, when known.
    pub node: Option<String>,
}

impl Op {
    pub(super) fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    pub(super) fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    pub(super) fn is_write(&self) -> bool {
        self.kind.is_write()
    }

    pub(super) fn is_read(&self) -> bool {
        self.kind.is_read()
    }

    /// When its effect may come last: its end when acknowledged or failed,
    /// never for an unknown outcome.
    pub(super) fn effect_deadline(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Unknown(_) => None,
            _ => Some(self.end),
        }
    }

    pub(super) fn version(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok { version, .. } => version.as_deref(),
            _ => None,
        }
    }

    pub(super) fn put_value(&self) -> Option<&str> {
        match &self.kind {
            OpKind::Put { value, .. } => Some(value),
            _ => None,
        }
    }

    pub(super) fn ttl(&self) -> Option<Duration> {
        match &self.kind {
            OpKind::Put { ttl, .. } => *ttl,
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            OpKind::Put { value, ttl: None } => format!("put {}={value:?}", self.key),
            OpKind::Put { value, ttl: Some(t) } => format!("put {}={value:?} ttl {} ms", self.key, t.as_millis()),
            OpKind::Delete => format!("delete {}", self.key),
            OpKind::Get => format!("get {}", self.key),
            OpKind::LinearizableGet => format!("linearizable get {}", self.key),
        };
        let outcome = match &self.outcome {
            Outcome::Ok { read, version } => {
                let read = match read {
                    _ if self.is_write() => String::new(),
                    Some(v) => format!(" -> {v:?}"),
                    None => " -> not found".into(),
                };
                format!("ok{read}{}", version.as_deref().map(|v| format!(" (version {v})")).unwrap_or_default())
            }
            Outcome::Failed(why) => format!("FAILED: {}", cut(why)),
            Outcome::Unknown(why) => format!("UNKNOWN: {}", cut(why)),
        };
        write!(
            f,
            "#{} client {} [{:.3}s .. {:.3}s] {what}: {outcome}{}",
            self.id,
            self.client,
            self.start.as_secs_f64(),
            self.end.as_secs_f64(),
            self.node.as_deref().map(|n| format!(" via {n}")).unwrap_or_default()
        )
    }
}

fn cut(text: &str) -> String {
    if text.len() <= 160 {
        return text.to_string();
    }
    let mut end = 160;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Records operations as a load makes them; cheap to clone, one per client task.
#[derive(Clone, Debug)]
pub struct Recorder {
    started: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    max_ops: usize,
}

/// An operation in flight (see [`Recorder::begin`]).
#[derive(Debug)]
#[must_use = "end it with its outcome"]
pub struct Pending {
    recorder: Recorder,
    client: usize,
    key: String,
    kind: OpKind,
    start: Duration,
}

impl Recorder {
    /// A recorder whose clock starts now, holding at most `max_ops` operations.
    pub fn new(max_ops: usize) -> Recorder {
        Recorder { started: Instant::now(), ops: Arc::default(), max_ops }
    }

    /// Time since the recorder started (to time faults on the same scale).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the history is full (a load stops then).
    pub fn is_full(&self) -> bool {
        self.len() >= self.max_ops
    }

    /// How many operations were recorded.
    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts an operation of `client` on `key`.
    pub fn begin(&self, client: usize, key: &str, kind: OpKind) -> Pending {
        Pending { recorder: self.clone(), client, key: key.to_string(), kind, start: self.elapsed() }
    }

    /// Every operation recorded so far, in the order they ended.
    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Pending {
    /// Ends the operation; `node` answered it when known. Over the
    /// recorder's bound the operation is dropped (and counted nowhere:
    /// a load checks [`Recorder::is_full`] before it begins one).
    pub fn end(self, outcome: Outcome, node: Option<String>) {
        let end = self.recorder.elapsed();
        let mut ops = self.recorder.ops.lock().unwrap_or_else(|p| p.into_inner());
        if ops.len() >= self.recorder.max_ops {
            return;
        }
        let id = ops.len();
        ops.push(Op { id, client: self.client, key: self.key, kind: self.kind, start: self.start, end, outcome, node });
    }
}

/// What each node answered for each key after the faults healed (`None`:
/// not found), read once everything had settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalState {
    /// Node -> key -> value.
    pub nodes: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// When the final reads were taken, on the recorder's clock.
    pub at: Duration,
}

/// Compares two versions of one key as the service orders them
/// (`None`: not comparable, e.g. a version that does not parse).
pub type Versions = fn(&str, &str) -> Option<std::cmp::Ordering>;

/// What [`check`](super::check) is told besides the history.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// How versions compare; `None` skips the rules that need versions.
    pub versions: Option<Versions>,
    /// How far past its nominal expiry a TTL value may still be read (and
    /// how early it may be missed): the service's clock bound between nodes.
    pub ttl_slack: Duration,
    /// Printed with a violation: the seed and how to re-run, the fault schedule.
    pub context: String,
    /// Whether default reads ([`OpKind::Get`]) promise read-your-writes
    /// (rule 6 of the module docs); `false` for a service whose reads are
    /// local. Linearizable reads are always held to rule 7.
    pub read_your_writes: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            versions: None,
            ttl_slack: Duration::from_secs(2),
            context: String::new(),
            read_your_writes: false,
        }
    }
}

/// The rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A read returned a value no put wrote.
    ValueNeverWritten,
    /// A read returned the value of a put that definitely failed.
    ValueOfAFailedWrite,
    /// A read returned the value of a put that started after the read ended.
    ValueFromTheFuture,
    /// After the faults healed, nodes answer differently for a key.
    NodesDisagree,
    /// An acknowledged write is not reflected in the final value: an older
    /// write is final, or a value is missing.
    LostWrite,
    /// A client's acknowledged writes to a key are not in its order.
    ClientOrder,
    /// An acknowledged write that followed another in real time has a
    /// version that is not higher.
    VersionOrder,
    /// A read returned a TTL value after its expiry.
    ExpiredValueRead,
    /// A read on the acknowledging node missed a TTL value well before its expiry.
    ValueExpiredEarly,
    /// A session read (a default read, when the service promises
    /// read-your-writes) returned a state older than the last write of the
    /// key its own client had acknowledged before the read started.
    MissedOwnWrite,
    /// A session read returned a version older than one its own client had
    /// read of the key (at either level) before it started: monotonic reads
    /// broken.
    ReadWentBack,
    /// A linearizable read returned a state older than a write of the key
    /// acknowledged before it started.
    StaleLinearizableRead,
    /// A linearizable read returned a state older than one a linearizable
    /// read of the key returned before it started.
    LinearizableReadWentBack,
}

/// One violation: the rule, the key, what is wrong, the operations involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The key.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The operations involved, in time order.
    pub ops: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} on key {:?}: {}", self.rule, self.key, self.message)?;
        for op in &self.ops {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

pub(super) fn violation(rule: Rule, key: &str, message: String, mut ops: Vec<&Op>) -> Violation {
    ops.sort_by_key(|o| (o.start, o.id));
    ops.dedup_by_key(|o| o.id);
    Violation { rule, key: key.to_string(), message, ops: ops.into_iter().cloned().collect() }
}

/// Whether a TTL put's value has surely expired by `at`: past its latest
/// expiry, its end plus the TTL plus the slack. A put of unknown outcome
/// may have been stamped at any time: it never surely expired.
pub(super) fn expired_by(put: &Op, at: Duration, slack: Duration) -> bool {
    match (put.ttl(), put.effect_deadline()) {
        (Some(ttl), Some(end)) => at > end + ttl + slack,
        _ => false,
    }
}

/// Whether a TTL put's value may have expired by `at`: past its earliest
/// expiry, its start plus the TTL.
pub(super) fn may_have_expired(put: &Op, at: Duration) -> bool {
    put.ttl().is_some_and(|ttl| at > put.start + ttl)
}
