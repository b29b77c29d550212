//! Other members' wall clocks, read from the `Date` header of their admin
//! listener's answers, and where each member's clock stands against the
//! cluster's (the median of the running members' clocks).
//!
//! Every HTTP server a rollgate service mounts its admin API on (axum, on
//! hyper) dates its answers, so any answer serves: [`read_clock`] sends one
//! `GET /` (answered 404 by the admin router's fallback) and compares the
//! `Date` header with the middle of the round trip. The header has
//! one-second precision (and truncates), so a reading is its midpoint, with
//! an error of half a second plus half the round trip ([`ClockReading`]).
//! That is coarse, and enough for what it is for: telling a clock that is
//! minutes, hours or days off (a node whose NTP is broken, a VM restored
//! from a snapshot) from one that agrees with the others. Nothing is
//! stored: a service reads its peers' clocks as it needs to (rollgate-kv
//! every two seconds), and `GET /admin/nodes` reads every running member's
//! once per request ([`offsets_from_median`] gives the `clock_offset_ms` of
//! each `NodeStatus`).

use crate::fanout::MemberClient;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;

/// The precision of an HTTP `Date` header.
pub const DATE_PRECISION_MS: u64 = 1000;

/// One reading of another node's wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockReading {
    /// Their clock minus ours, in milliseconds (negative: theirs is behind).
    pub offset_ms: i64,
    /// How far the true offset may be from `offset_ms`.
    pub error_ms: u64,
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The offset of a clock that dated its answer `date` (an HTTP date),
/// against ours, given when we sent the request (`sent_ms`, our clock) and
/// how long the round trip took. `None` when the header does not parse.
pub fn reading_from_date(date: &str, sent_ms: i64, round_trip: Duration) -> Option<ClockReading> {
    let theirs = httpdate::parse_http_date(date.trim()).ok()?;
    // The header truncates to the second: the true time is in [t, t + 1 s).
    let theirs_mid = epoch_ms(theirs).saturating_add((DATE_PRECISION_MS / 2) as i64);
    let half_trip = i64::try_from(round_trip.as_millis() / 2).unwrap_or(i64::MAX);
    let ours_mid = sent_ms.saturating_add(half_trip);
    Some(ClockReading {
        offset_ms: theirs_mid.saturating_sub(ours_mid),
        error_ms: DATE_PRECISION_MS / 2 + half_trip.unsigned_abs(),
    })
}

/// Reads the wall clock of the node whose admin listener is `admin_addr`
/// (`HOST:PORT`) against ours: one `GET /`, whatever its status, within
/// `timeout`. `None` when it does not answer in time or its answer has no
/// usable `Date` header.
pub async fn read_clock(client: &MemberClient, admin_addr: &str, timeout: Duration) -> Option<ClockReading> {
    let url = reqwest::Url::parse(&format!("{}://{admin_addr}/", client.scheme)).ok()?;
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return None;
    }
    let sent_ms = epoch_ms(SystemTime::now());
    let started = Instant::now();
    let resp = tokio::time::timeout(timeout, client.http.get(url).send()).await.ok()?.ok()?;
    let round_trip = started.elapsed();
    let date = resp.headers().get(reqwest::header::DATE)?.to_str().ok()?.to_string();
    drop(resp);
    reading_from_date(&date, sent_ms, round_trip)
}

/// Reads the clocks of `nodes` (node id → admin address) in parallel, each
/// within `timeout`; the nodes that answered.
pub async fn read_clocks(
    http: &MemberClient,
    nodes: &BTreeMap<String, String>,
    timeout: Duration,
) -> BTreeMap<String, ClockReading> {
    let reads = nodes.iter().map(|(id, addr)| async move { (id.clone(), read_clock(http, addr, timeout).await) });
    join_all(reads).await.into_iter().filter_map(|(id, r)| r.map(|r| (id, r))).collect()
}

/// Where each clock stands against the median of all of them: `offsets`
/// holds each node's clock minus one reference clock (the reader's own at
/// 0 among them); the answer holds each node's clock minus the median.
/// With an even number of clocks the median is the mean of the middle two.
pub fn offsets_from_median(offsets: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let Some(median) = median(offsets.values().copied().collect()) else { return BTreeMap::new() };
    offsets.iter().map(|(id, o)| (id.clone(), o.saturating_sub(median))).collect()
}

/// Fills in the `clock_offset_ms` of every running member of `list`: reads
/// the others' clocks (each within `timeout`; this node's is 0) and sets
/// each one's offset from the median of those read.
pub async fn fill_offsets(list: &mut rollgate_api::nodes::NodeList, http: &MemberClient, timeout: Duration) {
    use rollgate_api::nodes::NodeState;
    let others: BTreeMap<String, String> = list
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Running && !n.this_node)
        .map(|n| (n.node_id.clone(), n.admin_addr.clone()))
        .collect();
    let mut offsets: BTreeMap<String, i64> =
        read_clocks(http, &others, timeout).await.into_iter().map(|(id, r)| (id, r.offset_ms)).collect();
    if let Some(me) = list.nodes.iter().find(|n| n.this_node) {
        offsets.insert(me.node_id.clone(), 0);
    }
    let from_median = offsets_from_median(&offsets);
    for n in &mut list.nodes {
        n.clock_offset_ms = from_median.get(&n.node_id).copied();
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<i64>) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n.is_multiple_of(2) { values[n / 2 - 1] / 2 + values[n / 2] / 2 } else { values[n / 2] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_a_day_ahead_reads_as_a_day_ahead_within_its_precision() {
        let now = SystemTime::now();
        let sent = epoch_ms(now);
        let ahead = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        let r = reading_from_date(&ahead, sent, Duration::from_millis(20)).unwrap();
        assert!((r.offset_ms - 86_400_000).unsigned_abs() <= r.error_ms, "{r:?}");
        assert_eq!(r.error_ms, 510);
        let behind = httpdate::fmt_http_date(now - Duration::from_secs(3600));
        let r = reading_from_date(&behind, sent, Duration::ZERO).unwrap();
        assert!((r.offset_ms + 3_600_000).unsigned_abs() <= r.error_ms, "{r:?}");
    }

    #[test]
    fn a_date_that_does_not_parse_is_no_reading() {
        for bad in ["", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT", &"x".repeat(10_000)] {
            assert_eq!(reading_from_date(bad, 0, Duration::ZERO), None, "{bad:?}");
        }
    }

    #[test]
    fn the_median_names_the_odd_clock_out() {
        let clocks: BTreeMap<String, i64> =
            [("a", 0), ("b", 86_400_000), ("c", 400)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let o = offsets_from_median(&clocks);
        assert_eq!((o["a"], o["b"], o["c"]), (-400, 86_399_600, 0));
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![-10, 30]), Some(10));
        assert_eq!(median(vec![i64::MAX, i64::MAX]), Some(i64::MAX - 1), "no overflow");
    }
}
