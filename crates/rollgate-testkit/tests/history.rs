//! The history checker fed hand-written histories: one per kind of
//! violation, each of which it must report (a checker that cannot fail
//! proves nothing), and the histories it must accept (stale reads, a write
//! of unknown outcome that took effect late, an expired TTL value).

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

    /// Checks against every node answering `finals` (key, value) at `at` ms.
    fn check(&self, finals: &[(&str, Option<&str>)], at: u64) -> Report {
        let keys: BTreeMap<String, Option<String>> =
            finals.iter().map(|(k, v)| (k.to_string(), v.map(String::from))).collect();
        let nodes = ["n1", "n2", "n3"].into_iter().map(|n| (n.to_string(), keys.clone())).collect();
        let options = CheckOptions {
            versions: Some(|a, b| Some(a.parse::<u64>().ok()?.cmp(&b.parse::<u64>().ok()?))),
            ttl_slack: ms(500),
            context: "seed: 7 (re-run with SEED=7)".into(),
        };
        check(&self.ops, &FinalState { nodes, at: ms(at) }, &options)
    }
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
