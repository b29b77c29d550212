//! Rules 6 (session reads) and 7 (linearizable reads): the oldest state an
//! acknowledged read may return — its floor, set by a write or a read that
//! ended before it started — and whether it returned that state or a newer
//! one.
//!
//! With versions ([`CheckOptions::versions`](super::CheckOptions::versions))
//! a read's version is compared with the floor's; without (an older service
//! that does not say, or no order given) the read is compared by identity:
//! it returned the floor's value, or one written by a put that may have
//! taken effect after the floor's write.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::model::{Op, OpKind, Outcome, Rule, Versions, Violation, may_have_expired, violation};

/// What a floor left in the key: a put's value, or nothing (a delete, or a
/// read that found nothing).
#[derive(Clone, Copy)]
enum Holds<'a> {
    Put(&'a Op),
    Nothing,
}

/// The oldest state a read may return, set by `op` (a write, or a read).
#[derive(Clone, Copy)]
struct Floor<'a> {
    op: &'a Op,
    version: Option<&'a str>,
    holds: Holds<'a>,
}

impl<'a> Floor<'a> {
    fn of_write(op: &'a Op) -> Floor<'a> {
        let holds = if op.put_value().is_some() { Holds::Put(op) } else { Holds::Nothing };
        Floor { op, version: op.version(), holds }
    }

    /// A read's floor: `None` when it imposes nothing (it found nothing and
    /// says no version, or read a value no put wrote or of a failed put:
    /// rule 1 reports that).
    fn of_read(op: &'a Op, puts: &BTreeMap<&str, &'a Op>) -> Option<Floor<'a>> {
        let holds = match read_value(op) {
            Some(value) => Holds::Put(puts.get(value).filter(|p| !p.failed())?),
            None if op.version().is_some() => Holds::Nothing,
            None => return None,
        };
        Some(Floor { op, version: op.version(), holds })
    }

    fn describe(&self) -> String {
        let version = self.version.map(|v| format!(" (version {v})")).unwrap_or_default();
        match (self.op.kind.is_read(), self.holds) {
            (false, Holds::Put(_)) => format!("put #{}{version}", self.op.id),
            (false, Holds::Nothing) => format!("delete #{}{version}", self.op.id),
            (true, _) => format!("{} returned by {} #{}", returned(self.op), kind(self.op), self.op.id),
        }
    }
}

fn read_value(op: &Op) -> Option<&str> {
    match &op.outcome {
        Outcome::Ok { read, .. } => read.as_deref(),
        _ => None,
    }
}

fn kind(read: &Op) -> &'static str {
    if read.kind == OpKind::LinearizableGet { "linearizable read" } else { "read" }
}

/// What a read returned, for a message.
fn returned(op: &Op) -> String {
    let version = op.version().map(|v| format!(" (version {v})")).unwrap_or_default();
    match read_value(op) {
        Some(value) => format!("{value:?}{version}"),
        None => format!("nothing{version}"),
    }
}

/// The history of one key, as the read rules look at it.
struct Key<'a> {
    name: &'a str,
    ops: &'a [&'a Op],
    puts: BTreeMap<&'a str, &'a Op>,
    cmp: Option<Versions>,
}

impl<'a> Key<'a> {
    fn new(name: &'a str, ops: &'a [&'a Op], cmp: Option<Versions>) -> Key<'a> {
        let puts = ops.iter().filter_map(|o| o.put_value().map(|v| (v, *o))).collect();
        Key { name, ops, puts, cmp }
    }

    /// The acknowledged operations that ended before `read` started, latest end first.
    fn before(&self, read: &Op) -> Vec<&'a Op> {
        let mut before: Vec<&Op> = self.ops.iter().filter(|o| o.acked() && o.end < read.start).copied().collect();
        before.sort_by_key(|o| std::cmp::Reverse((o.end, o.id)));
        before
    }

    /// Whether `read` returned `floor`'s state or a newer one.
    fn satisfies(&self, read: &Op, floor: &Floor) -> bool {
        if let (Some(cmp), Some(f), Some(v)) = (self.cmp, floor.version, read.version()) {
            // Incomparable versions say nothing.
            if cmp(v, f).is_none_or(|o| o != Ordering::Less) {
                return true;
            }
            return read_value(read).is_none() && self.nothing_allowed(read, floor);
        }
        // By identity.
        let Some(value) = read_value(read) else { return self.nothing_allowed(read, floor) };
        let Some(put) = self.puts.get(value).filter(|p| !p.failed()) else { return true };
        let since = match floor.holds {
            // (The floor's own put did not end before it started.)
            Holds::Put(w) => w.start,
            Holds::Nothing if floor.op.is_write() => floor.op.start,
            // A read that found nothing, and no version to compare with.
            Holds::Nothing => return true,
        };
        // The put did not end before the floor's write started: it may have come after it.
        put.effect_deadline().is_none_or(|end| end >= since)
    }

    /// Whether finding nothing is allowed by `floor`: it holds nothing; or
    /// its value has a TTL and may have expired by the read's end; or a
    /// delete that did not definitely fail started before the read ended
    /// and may have come after the floor's write (a version above the
    /// floor's, or unknown; without versions: it did not end before the
    /// floor's write started).
    fn nothing_allowed(&self, read: &Op, floor: &Floor) -> bool {
        let Holds::Put(w) = floor.holds else { return true };
        if may_have_expired(w, read.end) {
            return true;
        }
        self.ops.iter().any(|d| {
            d.kind == OpKind::Delete
                && !d.failed()
                && d.start < read.end
                && match (self.cmp, floor.version) {
                    (Some(cmp), Some(f)) => {
                        d.version().and_then(|dv| cmp(dv, f)).is_none_or(|o| o == Ordering::Greater)
                    }
                    _ => d.effect_deadline().is_none_or(|end| end >= w.start),
                }
        })
    }

    /// The first floor of `floors` that `read` does not satisfy.
    fn first_unmet(&self, read: &Op, floors: impl IntoIterator<Item = Floor<'a>>) -> Option<Floor<'a>> {
        floors.into_iter().find(|f| !self.satisfies(read, f))
    }

    /// Of `floors` (latest end first), the ones to check: with versions the
    /// one with the highest version, then each that says none; without,
    /// every one (each is compared by identity).
    fn newest(&self, floors: Vec<Floor<'a>>) -> Vec<Floor<'a>> {
        let Some(cmp) = self.cmp else { return floors };
        let (versioned, unversioned): (Vec<Floor>, Vec<Floor>) = floors.into_iter().partition(|f| f.version.is_some());
        let top = versioned.into_iter().reduce(|best, f| {
            let newer = cmp(f.version.unwrap_or_default(), best.version.unwrap_or_default()) == Some(Ordering::Greater);
            if newer { f } else { best }
        });
        top.into_iter().chain(unversioned).collect()
    }

    fn report(&self, rule: Rule, read: &Op, floor: &Floor, what: &str) -> Violation {
        let message = format!(
            "{} #{} by client {} returned {}, older than {} {what}",
            kind(read),
            read.id,
            read.client,
            returned(read),
            floor.describe(),
        );
        violation(rule, self.name, message, vec![floor.op, read])
    }
}

/// Rule 6 (when the service promises read-your-writes): a client's default
/// read sees the client's own last acknowledged write of the key, and
/// nothing older than the client's last read of it.
pub(super) fn session_reads(key: &str, ops: &[&Op], cmp: Option<Versions>, out: &mut Vec<Violation>) {
    let k = Key::new(key, ops, cmp);
    for read in ops.iter().filter(|o| o.kind == OpKind::Get && o.acked()) {
        let mine: Vec<&Op> = k.before(read).into_iter().filter(|o| o.client == read.client).collect();
        let own_write = mine.iter().find(|o| o.is_write()).map(|w| Floor::of_write(w));
        if let Some(floor) = k.first_unmet(read, own_write) {
            let what = "the same client acknowledged before the read started";
            out.push(k.report(Rule::MissedOwnWrite, read, &floor, what));
        }
        let last_read = mine.iter().find(|o| o.is_read()).and_then(|r| Floor::of_read(r, &k.puts));
        if let Some(floor) = k.first_unmet(read, last_read) {
            out.push(k.report(Rule::ReadWentBack, read, &floor, "of the same client before it started"));
        }
    }
}

/// Rule 7: a linearizable read sees the newest write acknowledged before
/// it started, and nothing older than a linearizable read that ended before
/// it started.
pub(super) fn linearizable_reads(key: &str, ops: &[&Op], cmp: Option<Versions>, out: &mut Vec<Violation>) {
    let k = Key::new(key, ops, cmp);
    for read in ops.iter().filter(|o| o.kind == OpKind::LinearizableGet && o.acked()) {
        let before = k.before(read);
        let writes = k.newest(before.iter().filter(|o| o.is_write()).map(|w| Floor::of_write(w)).collect());
        if let Some(floor) = k.first_unmet(read, writes) {
            out.push(k.report(Rule::StaleLinearizableRead, read, &floor, "acknowledged before the read started"));
        }
        let reads = before
            .iter()
            .filter(|o| o.kind == OpKind::LinearizableGet)
            .filter_map(|r| Floor::of_read(r, &k.puts))
            .collect();
        if let Some(floor) = k.first_unmet(read, k.newest(reads)) {
            out.push(k.report(Rule::LinearizableReadWentBack, read, &floor, "before it started"));
        }
    }
}
