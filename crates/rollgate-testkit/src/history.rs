//! A history checker for key-value services under faults: a bounded client
//! load records every operation it makes ([`Recorder`]: start, end,
//! outcome, the node that answered); once the faults have healed, the test
//! reads every key from every node ([`FinalState`]) and [`check`] verifies
//! the history against a consistency model of last-writer-wins registers
//! with local reads, and reports the first violation with the operations
//! involved ([`Violation`]).
//!
//! Nothing here knows a particular service: keys and values are strings,
//! every put writes a value unique in the run (so a read names the one write
//! it saw), and a write's version, when the service reports one, is
//! compared with the [`Versions`] order the test gives.
//!
//! # Outcomes
//!
//! - [`Outcome::Ok`]: acknowledged (a read: answered, with the value or none).
//! - [`Outcome::Failed`]: definitely not applied (the service refused it
//!   before storing anything).
//! - [`Outcome::Unknown`]: a timeout, a lost connection, a refusal after
//!   some replica stored it: it may take effect at any time after its start,
//!   or never (etcd behaves alike: a put that timed out without a quorum may
//!   commit once the members are back).
//!
//! # The rules ([`Rule`])
//!
//! 1. **No value from nowhere**: a read returns a value some put wrote,
//!    not one of a put that definitely failed, and not one of a put that
//!    started after the read ended.
//! 2. **No lost write**: after the faults heal, every node holds the same
//!    value for each key, and that value comes from a write no
//!    acknowledged write of the key followed in real time: an acknowledged
//!    write that started after the final one's write had ended was lost
//!    (overwritten by an older one, or never stored). A write of unknown
//!    outcome may be final, having taken effect late; a TTL value that
//!    has expired counts as deleted.
//! 3. **Each client's writes in its order**: of one client's acknowledged
//!    writes to a key, a later one has the higher version, and an earlier
//!    one is never the final value. (The special case of 2 for one client,
//!    reported on its own.)
//! 4. **Versions follow real time**: an acknowledged write that started
//!    after another acknowledged write of the key ended has the higher
//!    version.
//! 5. **TTLs honoured**: no read returns a TTL value after its expiry (the
//!    write's end plus the TTL plus the allowed slack); a read on the node
//!    that acknowledged a TTL write, well before its expiry and with no
//!    other write of the key around, sees it.
//!
//! Reads are not required to be linearizable: a node may answer from a
//! replica that has not received the latest write yet (a partition,
//! replication lag). A service that promises more (read-your-writes,
//! linearizable reads) adds its own rules on the same history.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Read the key.
    Get,
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
    fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    fn is_write(&self) -> bool {
        !matches!(self.kind, OpKind::Get)
    }

    /// When its effect may come last: its end when acknowledged or failed,
    /// never for an unknown outcome.
    fn effect_deadline(&self) -> Option<Duration> {
        match self.outcome {
            Outcome::Unknown(_) => None,
            _ => Some(self.end),
        }
    }

    fn version(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok { version, .. } => version.as_deref(),
            _ => None,
        }
    }

    fn put_value(&self) -> Option<&str> {
        match &self.kind {
            OpKind::Put { value, .. } => Some(value),
            _ => None,
        }
    }

    fn ttl(&self) -> Option<Duration> {
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
        };
        let outcome = match &self.outcome {
            Outcome::Ok { read, version } => {
                let read = match (&self.kind, read) {
                    (OpKind::Get, Some(v)) => format!(" -> {v:?}"),
                    (OpKind::Get, None) => " -> not found".into(),
                    _ => String::new(),
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

/// What [`check`] is told besides the history.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// How versions compare; `None` skips the rules that need versions.
    pub versions: Option<Versions>,
    /// How far past its nominal expiry a TTL value may still be read (and
    /// how early it may be missed): the service's clock bound between nodes.
    pub ttl_slack: Duration,
    /// Printed with a violation: the seed and how to re-run, the fault schedule.
    pub context: String,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { versions: None, ttl_slack: Duration::from_secs(2), context: String::new() }
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

/// The result of [`check`].
#[derive(Clone, Debug)]
pub struct Report {
    /// Operations checked.
    pub ops: usize,
    /// Of which acknowledged, failed, of unknown outcome.
    pub acked: usize,
    /// Failed.
    pub failed: usize,
    /// Unknown.
    pub unknown: usize,
    /// Every violation found, the first (in time) first.
    pub violations: Vec<Violation>,
    /// Printed with a violation.
    pub context: String,
    /// The final state checked.
    pub final_state: FinalState,
}

impl Report {
    /// Whether the history holds every rule.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// How many violations of `rule` were found.
    pub fn count(&self, rule: Rule) -> usize {
        self.violations.iter().filter(|v| v.rule == rule).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts =
            format!("{} ops ({} acknowledged, {} failed, {} unknown)", self.ops, self.acked, self.failed, self.unknown);
        let Some(first) = self.violations.first() else {
            return write!(f, "PASS {counts}");
        };
        let mut rules: BTreeMap<Rule, usize> = BTreeMap::new();
        for v in &self.violations {
            *rules.entry(v.rule).or_default() += 1;
        }
        writeln!(f, "FAIL {counts}: {} violation(s) {rules:?}; the first:", self.violations.len())?;
        write!(f, "{first}")?;
        writeln!(f, "  final values of {:?} (read at {:.3}s):", first.key, self.final_state.at.as_secs_f64())?;
        for (node, keys) in &self.final_state.nodes {
            writeln!(f, "    {node}: {:?}", keys.get(&first.key).cloned().flatten())?;
        }
        if !self.context.is_empty() {
            writeln!(f, "{}", self.context)?;
        }
        Ok(())
    }
}

/// Checks `history` and `final_state` against the rules of the module docs.
pub fn check(history: &[Op], final_state: &FinalState, options: &CheckOptions) -> Report {
    let mut violations = Vec::new();
    let by_key = group_by_key(history, final_state);
    for (key, ops) in &by_key {
        reads_come_from_writes(key, ops, &mut violations);
        final_value(key, ops, final_state, options, &mut violations);
        if let Some(cmp) = options.versions {
            versions_follow_real_time(key, ops, cmp, &mut violations);
        }
        ttls_honoured(key, ops, options.ttl_slack, &mut violations);
    }
    violations.sort_by_key(|v| v.ops.iter().map(|o| o.end).max().unwrap_or_default());
    Report {
        ops: history.len(),
        acked: history.iter().filter(|o| o.acked()).count(),
        failed: history.iter().filter(|o| o.failed()).count(),
        unknown: history.iter().filter(|o| matches!(o.outcome, Outcome::Unknown(_))).count(),
        violations,
        context: options.context.clone(),
        final_state: final_state.clone(),
    }
}

/// Every key of the history and the final state, with its operations in start order.
fn group_by_key<'a>(history: &'a [Op], final_state: &FinalState) -> BTreeMap<String, Vec<&'a Op>> {
    let mut by_key: BTreeMap<String, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.clone()).or_default().push(op);
    }
    for keys in final_state.nodes.values() {
        for key in keys.keys() {
            by_key.entry(key.clone()).or_default();
        }
    }
    for ops in by_key.values_mut() {
        ops.sort_by_key(|o| (o.start, o.id));
    }
    by_key
}

fn violation(rule: Rule, key: &str, message: String, mut ops: Vec<&Op>) -> Violation {
    ops.sort_by_key(|o| (o.start, o.id));
    ops.dedup_by_key(|o| o.id);
    Violation { rule, key: key.to_string(), message, ops: ops.into_iter().cloned().collect() }
}

/// Rule 1.
fn reads_come_from_writes(key: &str, ops: &[&Op], out: &mut Vec<Violation>) {
    let puts: BTreeMap<&str, &Op> = ops.iter().filter_map(|o| o.put_value().map(|v| (v, *o))).collect();
    for read in ops.iter().filter(|o| o.kind == OpKind::Get) {
        let Outcome::Ok { read: Some(value), .. } = &read.outcome else { continue };
        match puts.get(value.as_str()) {
            None => out.push(violation(
                Rule::ValueNeverWritten,
                key,
                format!("read {value:?}, which no put of this key wrote"),
                vec![read],
            )),
            Some(put) if put.failed() => out.push(violation(
                Rule::ValueOfAFailedWrite,
                key,
                format!("read {value:?}, the value of a put that failed (nothing of it was to be stored)"),
                vec![put, read],
            )),
            Some(put) if put.start > read.end => out.push(violation(
                Rule::ValueFromTheFuture,
                key,
                format!("read {value:?} before the put of it started"),
                vec![read, put],
            )),
            Some(_) => {}
        }
    }
}

/// Whether a TTL put's value has surely expired by `at`: past its latest
/// expiry, its end plus the TTL plus the slack. A put of unknown outcome
/// may have been stamped at any time: it never surely expired.
fn expired_by(put: &Op, at: Duration, slack: Duration) -> bool {
    match (put.ttl(), put.effect_deadline()) {
        (Some(ttl), Some(end)) => at > end + ttl + slack,
        _ => false,
    }
}

/// Whether a TTL put's value may have expired by `at`: past its earliest
/// expiry, its start plus the TTL.
fn may_have_expired(put: &Op, at: Duration) -> bool {
    put.ttl().is_some_and(|ttl| at > put.start + ttl)
}

/// Rules 2 and 3 (the final value): the nodes agree, and no acknowledged
/// write of the key came after the write of the final value in real time.
fn final_value(key: &str, ops: &[&Op], final_state: &FinalState, options: &CheckOptions, out: &mut Vec<Violation>) {
    let answers: BTreeSet<Option<&str>> =
        final_state.nodes.values().map(|keys| keys.get(key).and_then(|v| v.as_deref())).collect();
    if answers.len() > 1 {
        let message = format!(
            "after the faults healed the nodes answer {}",
            final_state
                .nodes
                .iter()
                .map(|(n, k)| format!("{n}: {:?}", k.get(key).cloned().flatten()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push(violation(Rule::NodesDisagree, key, message, ops.iter().filter(|o| o.is_write()).copied().collect()));
        return;
    }
    let Some(final_value) = answers.into_iter().next() else { return };
    if let Some(v) = final_value
        && let Some(put) = ops.iter().find(|o| o.put_value() == Some(v)).filter(|o| o.failed())
    {
        let message = format!("the final value is {v:?}, written by a put that failed");
        out.push(violation(Rule::ValueOfAFailedWrite, key, message, vec![put]));
        return;
    }
    let writes: Vec<&Op> = ops.iter().filter(|o| o.is_write() && !o.failed()).copied().collect();
    // What may have made the final value, and by when it had surely taken
    // effect (`None`: it may have taken effect at any time; `Some(None)`:
    // nothing made it, every acknowledged write counts).
    let (makers, deadline): (Vec<&Op>, Option<Option<Duration>>) = match final_value {
        Some(v) => {
            let makers: Vec<&Op> = writes.iter().filter(|o| o.put_value() == Some(v)).copied().collect();
            if makers.is_empty() {
                let message = format!("the final value is {v:?}, which no put of this key wrote");
                out.push(violation(Rule::ValueNeverWritten, key, message, Vec::new()));
                return;
            }
            let deadline = makers.iter().map(|o| o.effect_deadline()).max().flatten();
            (makers, deadline.map(Some))
        }
        None => {
            // A delete, a TTL value that may have expired, or nothing ever written.
            let makers: Vec<&Op> = writes
                .iter()
                .filter(|o| o.kind == OpKind::Delete || may_have_expired(o, final_state.at))
                .copied()
                .collect();
            let deadline = if makers.iter().any(|o| o.effect_deadline().is_none()) {
                None
            } else {
                Some(makers.iter().filter_map(|o| o.effect_deadline()).max())
            };
            (makers, deadline)
        }
    };
    let Some(deadline) = deadline else { return };
    let later: Vec<&Op> = writes
        .iter()
        .filter(|o| o.acked() && deadline.is_none_or(|d| o.start > d))
        // An acknowledged TTL value that has expired by now may be missing.
        .filter(|o| !(final_value.is_none() && expired_by(o, final_state.at, options.ttl_slack)))
        .filter(|o| Some(o.put_value()) != Some(final_value) || o.kind == OpKind::Delete)
        .copied()
        .collect();
    let Some(lost) = later.first() else { return };
    let same_client = makers.iter().find(|m| m.client == lost.client);
    let rule = if same_client.is_some() { Rule::ClientOrder } else { Rule::LostWrite };
    let message = match final_value {
        Some(v) => format!(
            "the final value is {v:?}, but an acknowledged {} started after the write of it had ended{}",
            if lost.kind == OpKind::Delete { "delete" } else { "put" },
            if same_client.is_some() { " (the same client's, in this order)" } else { "" }
        ),
        None => "the key is gone, but an acknowledged put started after every delete had ended".into(),
    };
    let mut involved: Vec<&Op> = makers;
    involved.push(lost);
    out.push(violation(rule, key, message, involved));
}

/// Rules 3 and 4 (versions): an acknowledged write that started after
/// another acknowledged write of the key ended has the higher version.
fn versions_follow_real_time(key: &str, ops: &[&Op], cmp: Versions, out: &mut Vec<Violation>) {
    let acked: Vec<&Op> = ops.iter().filter(|o| o.is_write() && o.acked() && o.version().is_some()).copied().collect();
    for (i, a) in acked.iter().enumerate() {
        // The first write after `a` in real time with a version not above a's.
        let bad = acked[i + 1..].iter().find(|b| {
            b.start > a.end
                && cmp(b.version().unwrap_or_default(), a.version().unwrap_or_default())
                    .is_some_and(|o| o != std::cmp::Ordering::Greater)
        });
        if let Some(b) = bad {
            let rule = if a.client == b.client { Rule::ClientOrder } else { Rule::VersionOrder };
            let message = format!(
                "an acknowledged write that started after another ended has version {}, not above {}",
                b.version().unwrap_or_default(),
                a.version().unwrap_or_default()
            );
            out.push(violation(rule, key, message, vec![a, b]));
            return;
        }
    }
}

/// Rule 5.
fn ttls_honoured(key: &str, ops: &[&Op], slack: Duration, out: &mut Vec<Violation>) {
    let puts: BTreeMap<&str, &Op> = ops.iter().filter_map(|o| o.put_value().map(|v| (v, *o))).collect();
    for read in ops.iter().filter(|o| o.kind == OpKind::Get && o.acked()) {
        let Outcome::Ok { read: value, .. } = &read.outcome else { continue };
        if let Some(put) = value.as_deref().and_then(|v| puts.get(v))
            && expired_by(put, read.start, slack)
        {
            let message = format!(
                "read a value {} ms after it expired (TTL {} ms, slack {} ms)",
                (read.start.saturating_sub(put.end + put.ttl().unwrap_or_default())).as_millis(),
                put.ttl().unwrap_or_default().as_millis(),
                slack.as_millis()
            );
            out.push(violation(Rule::ExpiredValueRead, key, message, vec![put, read]));
            continue;
        }
        // Missed early: a TTL put acknowledged by the reading node, with no
        // other write of the key from its start to the read's end.
        let missed = ops.iter().find(|p| {
            p.acked()
                && p.ttl().is_some()
                && p.node.is_some()
                && p.node == read.node
                && p.end < read.start
                && read.end + slack < p.start + p.ttl().unwrap_or_default()
                && value.as_deref() != p.put_value()
                && !ops.iter().any(|o| {
                    let late = matches!(o.outcome, Outcome::Unknown(_));
                    o.is_write() && o.id != p.id && o.start <= read.end && (o.end >= p.start || late)
                })
        });
        if let Some(p) = missed {
            let message = format!(
                "the node that acknowledged a TTL value answered {:?} {} ms before its earliest expiry",
                value,
                (p.start + p.ttl().unwrap_or_default()).saturating_sub(read.end).as_millis()
            );
            out.push(violation(Rule::ValueExpiredEarly, key, message, vec![p, read]));
        }
    }
}
