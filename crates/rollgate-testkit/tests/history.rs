//! The history checker fed hand-written histories: one per kind of
//! violation, each of which it must report (a checker that cannot fail
//! proves nothing), and the histories it must accept (stale default reads,
//! a write of unknown outcome that took effect late, an expired TTL value,
//! a read at either level that may have seen a concurrent write or delete).

use std::collections::BTreeMap;
use std::time::Duration;

use rollgate_testkit::history::{CheckOptions, FinalState, Op, OpKind, Outcome, Recorder, Report, Rule, check};

/// A history written by hand: times in milliseconds.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

fn ms(t: u64) -> Duration {
    Duration::from_millis(t)
}

fn ok(version: u64) -> Outcome {
    Outcome::Ok { read: None, version: Some(version.to_string()) }
}

fn read(value: Option<&str>) -> Outcome {
    Outcome::Ok { read: value.map(String::from), version: None }
}

fn failed() -> Outcome {
    Outcome::Failed("503 no_quorum, stored 0".into())
}

fn unknown() -> Outcome {
    Outcome::Unknown("timed out".into())
}

impl H {
    fn op(mut self, client: usize, key: &str, kind: OpKind, at: (u64, u64), outcome: Outcome, node: &str) -> H {
        let id = self.ops.len();
        let (start, end) = (ms(at.0), ms(at.1));
        self.ops.push(Op { id, client, key: key.into(), kind, start, end, outcome, node: Some(node.into()) });
        self
    }

    fn put(self, client: usize, key: &str, value: &str, at: (u64, u64), outcome: Outcome) -> H {
        self.op(client, key, OpKind::Put { value: value.into(), ttl: None }, at, outcome, "n1")
    }

    fn put_ttl(self, key: &str, value: &str, ttl_ms: u64, at: (u64, u64), outcome: Outcome, node: &str) -> H {
        self.op(9, key, OpKind::Put { value: value.into(), ttl: Some(ms(ttl_ms)) }, at, outcome, node)
    }

    fn delete(self, client: usize, key: &str, at: (u64, u64), outcome: Outcome) -> H {
        self.op(client, key, OpKind::Delete, at, outcome, "n1")
    }

    fn get(self, client: usize, key: &str, at: (u64, u64), outcome: Outcome, node: &str) -> H {
        self.op(client, key, OpKind::Get, at, outcome, node)
    }

    fn lget(self, client: usize, key: &str, at: (u64, u64), outcome: Outcome, node: &str) -> H {
        self.op(client, key, OpKind::LinearizableGet, at, outcome, node)
    }

    /// Checks against every node answering `finals` (key, value) at `at` ms,
    /// with numeric versions, default reads local.
    fn check(&self, finals: &[(&str, Option<&str>)], at: u64) -> Report {
        self.check_with(finals, at, options())
    }

    /// The same, default reads promising read-your-writes.
    fn check_sessions(&self, finals: &[(&str, Option<&str>)], at: u64) -> Report {
        self.check_with(finals, at, CheckOptions { read_your_writes: true, ..options() })
    }

    fn check_with(&self, finals: &[(&str, Option<&str>)], at: u64, options: CheckOptions) -> Report {
        let keys: BTreeMap<String, Option<String>> =
            finals.iter().map(|(k, v)| (k.to_string(), v.map(String::from))).collect();
        let nodes = ["n1", "n2", "n3"].into_iter().map(|n| (n.to_string(), keys.clone())).collect();
        check(&self.ops, &FinalState { nodes, at: ms(at) }, &options)
    }
}

fn options() -> CheckOptions {
    CheckOptions {
        versions: Some(|a, b| Some(a.parse::<u64>().ok()?.cmp(&b.parse::<u64>().ok()?))),
        ttl_slack: ms(500),
        context: "seed: 7 (re-run with SEED=7)".into(),
        read_your_writes: false,
    }
}

/// A read of `value` (`None`: nothing) that carries `version`.
fn read_at(value: Option<&str>, version: u64) -> Outcome {
    Outcome::Ok { read: value.map(String::from), version: Some(version.to_string()) }
}

/// Asserts that `report` found exactly the violations of `rule` (at least
/// one) and that the first one names the operations `ids`.
fn found(report: &Report, rule: Rule, ids: &[usize]) {
    assert!(report.count(rule) >= 1, "{rule:?} not reported:\n{report}\n{:?}", report.violations);
    let first = report.violations.iter().find(|v| v.rule == rule).unwrap();
    let got: Vec<usize> = first.ops.iter().map(|o| o.id).collect();
    assert_eq!(got, ids, "{report}");
    let text = report.to_string();
    assert!(text.starts_with("FAIL ") && text.contains(&format!("{rule:?}")), "{text}");
    assert!(text.contains("seed: 7"), "the context is printed: {text}");
}

/// Asserts that `report` found exactly one violation of `rule`, naming
/// the operations `ids` in its list and in its message.
fn found_one(report: &Report, rule: Rule, ids: &[usize]) {
    found(report, rule, ids);
    assert_eq!(report.count(rule), 1, "{report}\n{:?}", report.violations);
    let first = report.violations.iter().find(|v| v.rule == rule).unwrap();
    for id in ids {
        assert!(first.message.contains(&format!("#{id}")), "#{id} not named: {}", first.message);
    }
}

#[test]
fn a_clean_history_passes_with_stale_reads_and_a_deleted_key() {
    let h = H::default()
        .put(0, "a", "a1", (0, 10), ok(1))
        .get(1, "a", (20, 30), read(Some("a1")), "n2")
        .put(1, "a", "a2", (40, 50), ok(2))
        // A stale read on another node: allowed (reads are local).
        .get(0, "a", (60, 70), read(Some("a1")), "n3")
        .put(0, "b", "b1", (0, 10), ok(1))
        .delete(1, "b", (20, 30), ok(2))
        .get(2, "c", (0, 5), read(None), "n1");
    let r = h.check(&[("a", Some("a2")), ("b", None)], 1_000);
    assert!(r.passed(), "{r}");
    assert_eq!((r.ops, r.acked, r.failed, r.unknown), (7, 7, 0, 0));
    assert_eq!(r.to_string(), "PASS 7 ops (7 acknowledged, 0 failed, 0 unknown)");
}

#[test]
fn a_read_of_a_value_no_put_wrote_is_reported() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).get(1, "a", (20, 30), read(Some("zz")), "n2");
    found(&h.check(&[("a", Some("a1"))], 100), Rule::ValueNeverWritten, &[1]);
    // A final value no put wrote, too.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1));
    found(&h.check(&[("a", Some("zz"))], 100), Rule::ValueNeverWritten, &[]);
}

#[test]
fn a_read_of_a_failed_write_is_reported() {
    let h = H::default().put(0, "a", "a1", (0, 10), failed()).get(1, "a", (20, 30), read(Some("a1")), "n2");
    found(&h.check(&[("a", None)], 100), Rule::ValueOfAFailedWrite, &[0, 1]);
    let r = H::default().put(0, "a", "a1", (0, 10), failed()).check(&[("a", Some("a1"))], 100);
    found(&r, Rule::ValueOfAFailedWrite, &[0]);
}

#[test]
fn a_read_from_the_future_is_reported() {
    let h = H::default().get(1, "a", (0, 10), read(Some("a1")), "n2").put(0, "a", "a1", (20, 30), ok(1));
    found(&h.check(&[("a", Some("a1"))], 100), Rule::ValueFromTheFuture, &[0, 1]);
}

#[test]
fn nodes_that_disagree_after_the_heal_are_reported() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(1, "a", "a2", (20, 30), ok(2));
    let mut finals = FinalState { at: ms(100), ..FinalState::default() };
    for (node, value) in [("n1", "a2"), ("n2", "a2"), ("n3", "a1")] {
        finals.nodes.insert(node.into(), [("a".to_string(), Some(value.to_string()))].into());
    }
    let r = check(&h.ops, &finals, &CheckOptions::default());
    assert_eq!(r.count(Rule::NodesDisagree), 1, "{r}");
    assert!(r.to_string().contains("n3: Some(\"a1\")"), "{r}");
}

#[test]
fn an_acknowledged_write_overwritten_by_an_older_one_is_a_lost_write() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(1, "a", "a2", (20, 30), ok(2));
    found(&h.check(&[("a", Some("a1"))], 100), Rule::LostWrite, &[0, 1]);
    // A value that vanished.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1));
    found(&h.check(&[("a", None)], 100), Rule::LostWrite, &[0]);
    // A delete that did not hold.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).delete(1, "a", (20, 30), ok(2));
    found(&h.check(&[("a", Some("a1"))], 100), Rule::LostWrite, &[0, 1]);
}

#[test]
fn a_clients_own_writes_out_of_order_are_reported_as_such() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(0, "a", "a2", (20, 30), ok(2));
    found(&h.check(&[("a", Some("a1"))], 100), Rule::ClientOrder, &[0, 1]);
    // Versions out of the client's order, whatever the final value.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(5)).put(0, "a", "a2", (20, 30), ok(3));
    found(&h.check(&[("a", Some("a2"))], 100), Rule::ClientOrder, &[0, 1]);
}

#[test]
fn versions_against_real_time_are_reported() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(5)).put(1, "a", "a2", (20, 30), ok(5));
    found(&h.check(&[("a", Some("a2"))], 100), Rule::VersionOrder, &[0, 1]);
    // Concurrent writes may be ordered either way.
    let h = H::default().put(0, "a", "a1", (0, 30), ok(5)).put(1, "a", "a2", (10, 20), ok(4));
    assert!(h.check(&[("a", Some("a1"))], 100).passed());
}

#[test]
fn a_write_of_unknown_outcome_may_take_effect_late_as_etcd_commits_a_timed_out_put() {
    let h = H::default()
        .put(0, "a", "a1", (0, 10), ok(1))
        .put(1, "a", "a2", (20, 30), unknown())
        .put(2, "a", "a3", (40, 50), ok(3))
        .get(2, "a", (60, 70), read(Some("a2")), "n1");
    let r = h.check(&[("a", Some("a2"))], 100);
    assert!(r.passed(), "{r}");
    assert_eq!(r.unknown, 1);
    // But not a failed one.
    let h = H::default().put(1, "a", "a2", (20, 30), failed()).put(2, "a", "a3", (40, 50), ok(3));
    assert!(!h.check(&[("a", Some("a2"))], 100).passed());
}

#[test]
fn a_ttl_value_read_after_its_expiry_is_reported() {
    let h = H::default().put_ttl("t", "t1", 1_000, (0, 10), ok(1), "n1").get(
        1,
        "t",
        (2_000, 2_010),
        read(Some("t1")),
        "n2",
    );
    found(&h.check(&[("t", None)], 3_000), Rule::ExpiredValueRead, &[0, 1]);
    // Within the slack, or before the expiry: fine; an expired value may be gone.
    let h = H::default().put_ttl("t", "t1", 1_000, (0, 10), ok(1), "n1").get(
        1,
        "t",
        (1_200, 1_210),
        read(Some("t1")),
        "n2",
    );
    assert!(h.check(&[("t", None)], 3_000).passed());
}

#[test]
fn a_ttl_value_missed_early_on_the_node_that_acknowledged_it_is_reported() {
    let h = H::default().put_ttl("t", "t1", 10_000, (0, 10), ok(1), "n1").get(1, "t", (100, 110), read(None), "n1");
    found(&h.check(&[("t", Some("t1"))], 3_000), Rule::ValueExpiredEarly, &[0, 1]);
    // On another node it is a stale read: allowed.
    let h = H::default().put_ttl("t", "t1", 10_000, (0, 10), ok(1), "n1").get(1, "t", (100, 110), read(None), "n2");
    assert!(h.check(&[("t", Some("t1"))], 3_000).passed());
}

#[test]
fn a_linearizable_read_is_held_to_the_rules_of_every_read() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).lget(1, "a", (20, 30), read(Some("zz")), "n2");
    found(&h.check(&[("a", Some("a1"))], 100), Rule::ValueNeverWritten, &[1]);
    let h = H::default().lget(1, "a", (0, 10), read(Some("a1")), "n2").put(0, "a", "a1", (20, 30), ok(1));
    found(&h.check(&[("a", Some("a1"))], 100), Rule::ValueFromTheFuture, &[0, 1]);
    let h = H::default().put_ttl("t", "t1", 1_000, (0, 10), ok(1), "n1").lget(
        1,
        "t",
        (2_000, 2_010),
        read(Some("t1")),
        "n2",
    );
    found(&h.check(&[("t", None)], 3_000), Rule::ExpiredValueRead, &[0, 1]);
    let h = H::default().put_ttl("t", "t1", 10_000, (0, 10), ok(1), "n1").lget(1, "t", (100, 110), read(None), "n1");
    found(&h.check(&[("t", Some("t1"))], 3_000), Rule::ValueExpiredEarly, &[0, 1]);
    // It is a read: not a write the final value must reflect.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).lget(1, "a", (20, 30), read(Some("a1")), "n2");
    let r = h.check(&[("a", Some("a1"))], 100);
    assert!(r.passed(), "{r}");
    assert!(h.ops[1].to_string().contains("linearizable get a: ok -> \"a1\""), "{}", h.ops[1]);
}

#[test]
fn the_recorder_keeps_every_operation_up_to_its_bound_from_many_threads() {
    let rec = Recorder::new(50);
    let threads: Vec<_> = (0..4)
        .map(|client| {
            let rec = rec.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let op = rec.begin(client, "k", OpKind::Put { value: format!("c{client}-{i}"), ttl: None });
                    op.end(Outcome::Ok { read: None, version: None }, Some("n1".into()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let h = rec.history();
    assert_eq!(h.len(), 50, "bounded");
    assert!(rec.is_full());
    assert!(h.iter().enumerate().all(|(i, op)| op.id == i && op.start <= op.end));
}

#[test]
fn a_session_read_that_misses_its_clients_own_write_is_reported() {
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(0, "a", "a2", (20, 30), ok(2)).get(
        0,
        "a",
        (40, 50),
        read_at(Some("a1"), 1),
        "n2",
    );
    found_one(&h.check_sessions(&[("a", Some("a2"))], 100), Rule::MissedOwnWrite, &[1, 2]);
    // Without a version on the read: the value a1 was written before a2 started.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(0, "a", "a2", (20, 30), ok(2)).get(
        0,
        "a",
        (40, 50),
        read(Some("a1")),
        "n2",
    );
    found_one(&h.check_sessions(&[("a", Some("a2"))], 100), Rule::MissedOwnWrite, &[1, 2]);
    // Another client's read may miss the write (it lands on a lagging replica).
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(0, "a", "a2", (20, 30), ok(2)).get(
        1,
        "a",
        (40, 50),
        read_at(Some("a1"), 1),
        "n2",
    );
    let r = h.check_sessions(&[("a", Some("a2"))], 100);
    assert!(r.passed(), "{r}");
}

#[test]
fn a_session_read_of_nothing_passes_only_when_the_clients_write_may_be_gone() {
    // Nothing, with a tombstone older than the client's put.
    let older = H::default().delete(1, "a", (0, 10), ok(1)).put(0, "a", "a1", (20, 30), ok(2)).get(
        0,
        "a",
        (40, 50),
        read_at(None, 1),
        "n2",
    );
    found_one(&older.check_sessions(&[("a", Some("a1"))], 100), Rule::MissedOwnWrite, &[1, 2]);
    // A tombstone at or above the put's version: a delete that came after it.
    for version in [2, 3] {
        let h = H::default().delete(1, "a", (0, 10), ok(1)).put(0, "a", "a1", (20, 30), ok(2)).get(
            0,
            "a",
            (40, 50),
            read_at(None, version),
            "n2",
        );
        let r = h.check_sessions(&[("a", Some("a1"))], 100);
        assert!(r.passed(), "tombstone version {version}: {r}");
    }
    // A TTL value that may have expired by the read's end.
    let early = H::default().put_ttl("t", "t1", 1_000, (0, 10), ok(1), "n1").get(9, "t", (100, 110), read(None), "n2");
    found_one(&early.check_sessions(&[("t", None)], 3_000), Rule::MissedOwnWrite, &[0, 1]);
    let late =
        H::default().put_ttl("t", "t1", 1_000, (0, 10), ok(1), "n1").get(9, "t", (1_100, 1_110), read(None), "n2");
    assert!(late.check_sessions(&[("t", None)], 3_000).passed());
    // Another client's delete that may come after the put (unknown outcome,
    // or a higher version), but not one that failed or is older.
    let with = |delete: Outcome| {
        H::default()
            .put(0, "a", "a1", (0, 10), ok(2))
            .delete(1, "a", (5, 60), delete)
            .get(0, "a", (20, 30), read(None), "n2")
            .check_sessions(&[("a", Some("a1"))], 100)
    };
    assert!(with(unknown()).passed(), "{}", with(unknown()));
    assert!(with(ok(3)).passed(), "{}", with(ok(3)));
    found_one(&with(failed()), Rule::MissedOwnWrite, &[0, 2]);
    found_one(&with(ok(1)), Rule::MissedOwnWrite, &[0, 2]);
}

#[test]
fn a_session_read_that_goes_back_is_reported() {
    let h = H::default()
        .put(1, "a", "a1", (0, 10), ok(1))
        .put(1, "a", "a2", (20, 30), ok(2))
        .get(0, "a", (40, 50), read_at(Some("a2"), 2), "n1")
        .get(0, "a", (60, 70), read_at(Some("a1"), 1), "n2");
    found_one(&h.check_sessions(&[("a", Some("a2"))], 100), Rule::ReadWentBack, &[2, 3]);
    // Without versions on the reads.
    let h = H::default()
        .put(1, "a", "a1", (0, 10), ok(1))
        .put(1, "a", "a2", (20, 30), ok(2))
        .get(0, "a", (40, 50), read(Some("a2")), "n1")
        .get(0, "a", (60, 70), read(Some("a1")), "n2");
    found_one(&h.check_sessions(&[("a", Some("a2"))], 100), Rule::ReadWentBack, &[2, 3]);
    // After a linearizable read of the same client, too.
    let h = H::default()
        .put(1, "a", "a1", (0, 10), ok(1))
        .put(1, "a", "a2", (20, 30), ok(2))
        .lget(0, "a", (40, 50), read_at(Some("a2"), 2), "n1")
        .get(0, "a", (60, 70), read_at(Some("a1"), 1), "n2");
    found_one(&h.check_sessions(&[("a", Some("a2"))], 100), Rule::ReadWentBack, &[2, 3]);
    // Another client's reads may disagree.
    let h = H::default()
        .put(1, "a", "a1", (0, 10), ok(1))
        .put(1, "a", "a2", (20, 30), ok(2))
        .get(0, "a", (40, 50), read_at(Some("a2"), 2), "n1")
        .get(2, "a", (60, 70), read_at(Some("a1"), 1), "n2");
    assert!(h.check_sessions(&[("a", Some("a2"))], 100).passed());
}

#[test]
fn a_session_read_after_a_read_of_nothing_goes_back_only_against_its_tombstone() {
    let h = |first: Outcome| {
        H::default()
            .put(1, "a", "a1", (0, 10), ok(1))
            .delete(1, "a", (20, 30), ok(2))
            .get(0, "a", (40, 50), first, "n1")
            .get(0, "a", (60, 70), read_at(Some("a1"), 1), "n2")
            .check_sessions(&[("a", None)], 100)
    };
    found_one(&h(read_at(None, 2)), Rule::ReadWentBack, &[2, 3]);
    // Nothing without a version (nothing held, or an older node) imposes nothing.
    let r = h(read(None));
    assert!(r.passed(), "{r}");
    // Nor does a tombstone when versions cannot be compared.
    let r = H::default()
        .put(1, "a", "a1", (0, 10), ok(1))
        .delete(1, "a", (20, 30), ok(2))
        .get(0, "a", (40, 50), read_at(None, 2), "n1")
        .get(0, "a", (60, 70), read_at(Some("a1"), 1), "n2")
        .check_with(&[("a", None)], 100, CheckOptions { versions: None, read_your_writes: true, ..options() });
    assert!(r.passed(), "{r}");
}

#[test]
fn read_your_writes_off_does_not_flag_a_stale_get() {
    let h = H::default()
        .put(0, "a", "a1", (0, 10), ok(1))
        .put(0, "a", "a2", (20, 30), ok(2))
        .get(0, "a", (40, 50), read_at(Some("a1"), 1), "n2")
        .get(0, "a", (60, 70), read(None), "n3");
    let r = h.check(&[("a", Some("a2"))], 100);
    assert!(r.passed(), "{r}");
    let r = h.check_sessions(&[("a", Some("a2"))], 100);
    assert_eq!((r.count(Rule::MissedOwnWrite), r.count(Rule::ReadWentBack)), (2, 1), "{r}");
}

#[test]
fn a_stale_linearizable_read_is_reported() {
    let h = |read: Outcome, at: (u64, u64)| {
        H::default()
            .put(0, "a", "a1", (0, 10), ok(1))
            .put(1, "a", "a2", (20, 30), ok(2))
            .lget(2, "a", at, read, "n3")
            .check(&[("a", Some("a2"))], 100)
    };
    found_one(&h(read_at(Some("a1"), 1), (40, 50)), Rule::StaleLinearizableRead, &[1, 2]);
    found_one(&h(read(Some("a1")), (40, 50)), Rule::StaleLinearizableRead, &[1, 2]);
    found_one(&h(read(None), (40, 50)), Rule::StaleLinearizableRead, &[1, 2]);
    found_one(&h(read_at(None, 1), (40, 50)), Rule::StaleLinearizableRead, &[1, 2]);
    // The newest write, or a tombstone at or above it.
    assert!(h(read_at(Some("a2"), 2), (40, 50)).passed());
    assert!(h(read_at(None, 2), (40, 50)).passed());
    // Concurrent with the write of a2, either value.
    assert!(h(read_at(Some("a1"), 1), (25, 50)).passed());
    assert!(h(read_at(Some("a2"), 2), (25, 50)).passed());
    // Whatever the client: a default read may be stale.
    let h = H::default().put(0, "a", "a1", (0, 10), ok(1)).put(1, "a", "a2", (20, 30), ok(2)).get(
        2,
        "a",
        (40, 50),
        read_at(Some("a1"), 1),
        "n3",
    );
    assert!(h.check(&[("a", Some("a2"))], 100).passed());
}

#[test]
fn a_linearizable_read_is_held_to_the_highest_version_acknowledged_not_the_last_to_end() {
    // Concurrent writes: a1 took the higher version though a2 ended later.
    let h = |read: Outcome| {
        H::default()
            .put(0, "a", "a1", (0, 20), ok(5))
            .put(1, "a", "a2", (10, 30), ok(4))
            .lget(2, "a", (40, 50), read, "n3")
            .check(&[("a", Some("a1"))], 100)
    };
    found_one(&h(read_at(Some("a2"), 4)), Rule::StaleLinearizableRead, &[0, 2]);
    assert!(h(read_at(Some("a1"), 5)).passed());
}

#[test]
fn a_stale_linearizable_read_is_reported_without_versions_by_real_time() {
    let h = |read: Outcome| {
        H::default()
            .put(0, "a", "a1", (0, 10), ok(1))
            .put(1, "a", "a2", (20, 30), ok(2))
            .lget(2, "a", (40, 50), read, "n3")
            .check_with(&[("a", Some("a2"))], 100, CheckOptions { versions: None, ..options() })
    };
    found_one(&h(read_at(Some("a1"), 1)), Rule::StaleLinearizableRead, &[1, 2]);
    assert!(h(read_at(Some("a2"), 2)).passed());
    // Nothing, after a delete that may have come after the put: by real time.
    let h = |delete_at: (u64, u64)| {
        H::default()
            .delete(1, "a", delete_at, ok(1))
            .put(0, "a", "a1", (20, 30), ok(2))
            .lget(2, "a", (40, 50), read(None), "n3")
            .check_with(&[("a", Some("a1"))], 100, CheckOptions { versions: None, ..options() })
    };
    found_one(&h((0, 10)), Rule::StaleLinearizableRead, &[1, 2]);
    assert!(h((25, 45)).passed(), "{}", h((25, 45)));
}

#[test]
fn a_linearizable_read_that_goes_back_is_reported() {
    // a2's put is still in flight: the reads may see it or not, but not
    // see it and then no longer.
    let h = |second: (u64, u64), first: OpKind| {
        H::default()
            .put(0, "a", "a1", (0, 10), ok(1))
            .put(1, "a", "a2", (20, 80), ok(2))
            .op(2, "a", first, (30, 40), read_at(Some("a2"), 2), "n1")
            .lget(3, "a", second, read_at(Some("a1"), 1), "n2")
            .check(&[("a", Some("a2"))], 100)
    };
    let r = h((45, 55), OpKind::LinearizableGet);
    found_one(&r, Rule::LinearizableReadWentBack, &[2, 3]);
    assert_eq!(r.count(Rule::StaleLinearizableRead), 0, "{r}");
    // Overlapping reads may disagree while the write is in flight.
    assert!(h((35, 55), OpKind::LinearizableGet).passed());
    // A default read sets no floor for linearizable ones.
    assert!(h((45, 55), OpKind::Get).passed());
}
