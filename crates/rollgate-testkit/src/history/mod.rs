//! A history checker for key-value services under faults: a bounded client
//! load records every operation it makes ([`Recorder`]: start, end,
//! outcome, the node that answered); once the faults have healed, the test
//! reads every key from every node ([`FinalState`]) and [`check`] verifies
//! the history against a consistency model of last-writer-wins registers
//! with two read levels (default session reads, linearizable reads), and
//! reports the first violation with the operations involved ([`Violation`]).
//!
//! Nothing here knows a particular service: keys and values are strings,
//! every put writes a value unique in the run (so a read names the one write
//! it saw), and a version, when the service reports one, is compared with
//! the [`Versions`] order the test gives: an acknowledged write's, and a
//! read's (of the record it read; a read that found nothing may carry the
//! version of the tombstone it found, or none).
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
//! 1. **No value from nowhere**: a read (at either level) returns a value
//!    some put wrote, not one of a put that definitely failed, and not one
//!    of a put that started after the read ended.
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
//! 5. **TTLs honoured**: no read (at either level) returns a TTL value
//!    after its expiry (the write's end plus the TTL plus the allowed
//!    slack); a read on the node that acknowledged a TTL write, well before
//!    its expiry and with no other write of the key around, sees it.
//! 6. **Session reads** ([`OpKind::Get`], checked when
//!    [`CheckOptions::read_your_writes`] is set): an acknowledged read by a
//!    client returns no state older than the client's last acknowledged
//!    write of the key that ended before the read started
//!    ([`Rule::MissedOwnWrite`]), nor older than the client's last
//!    acknowledged read of the key (at either level) that ended before it
//!    started ([`Rule::ReadWentBack`]).
//! 7. **Linearizable reads** ([`OpKind::LinearizableGet`], always checked):
//!    an acknowledged read returns no state older than the write of the key
//!    with the highest version among those acknowledged before it started
//!    ([`Rule::StaleLinearizableRead`]), nor older than the linearizable
//!    read of the key with the highest version among those that ended
//!    before it started ([`Rule::LinearizableReadWentBack`]).
//!
//! "Not older than" a floor of version `f`, for rules 6 and 7: the read
//! carries a version at or above `f`; or it found nothing and the floor
//! holds nothing (a delete, or a read that found nothing), or holds a TTL
//! value that may have expired by the read's end, or a delete that did not
//! definitely fail started before the read ended with a version above `f`
//! or unknown (it may have come after the floor). Where a version is
//! missing (an older service) or [`CheckOptions::versions`] is `None`, the
//! read is compared by identity: it returned the floor's value, or one of a
//! put that did not end before the floor's write started (and finding
//! nothing is explained by a delete that did not end before then). A read
//! that found nothing and says no version sets no floor, nor does one that
//! found a tombstone when versions cannot be compared; failed reads are
//! not checked.
//!
//! Each read is checked at the level it asked for. A default read may be
//! stale: a node may answer from a replica that has not received the
//! latest write yet (a partition, replication lag); it is held to rules 1
//! and 5, and, when the service promises read-your-writes, to rule 6 (its
//! client never misses its own writes nor goes back). A linearizable read
//! is held to rules 1, 5 and 7: it sees every write acknowledged before it
//! started, and never goes back behind another linearizable read.

mod model;
mod reads;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

pub use model::{CheckOptions, FinalState, Op, OpKind, Outcome, Pending, Recorder, Rule, Versions, Violation};
use model::{expired_by, may_have_expired, violation};

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
        if options.read_your_writes {
            reads::session_reads(key, ops, options.versions, &mut violations);
        }
        reads::linearizable_reads(key, ops, options.versions, &mut violations);
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

/// Rule 1.
fn reads_come_from_writes(key: &str, ops: &[&Op], out: &mut Vec<Violation>) {
    let puts: BTreeMap<&str, &Op> = ops.iter().filter_map(|o| o.put_value().map(|v| (v, *o))).collect();
    for read in ops.iter().filter(|o| o.is_read()) {
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
    for read in ops.iter().filter(|o| o.is_read() && o.acked()) {
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
