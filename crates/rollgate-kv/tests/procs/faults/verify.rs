//! After the faults: the final state (every key read from every node once
//! they agree, or when the wait runs out), and the history checked against
//! rollgate-kv's consistency model (`rollgate_kv::consistency`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rollgate_kv::hlc::{MAX_FORWARD_DRIFT_MS, Version};
use rollgate_testkit::history::{CheckOptions, FinalState, Op, Recorder, Report, check};

/// How long the nodes may take to agree once the faults healed and the
/// load stopped (catch-up and background pulls have no event to wait on).
const CONVERGE: Duration = Duration::from_secs(30);

/// Every key's value on one node (`None`: not found); an error when a read fails.
async fn read_all(
    http: &reqwest::Client,
    admin: &str,
    keys: &BTreeSet<String>,
) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut out = BTreeMap::new();
    for key in keys {
        let resp = http.get(format!("http://{admin}/kv/{key}")).send().await.map_err(|e| format!("{admin}: {e}"))?;
        let value = match resp.status().as_u16() {
            200 => Some(resp.text().await.map_err(|e| e.to_string())?),
            404 => None,
            s => return Err(format!("{admin} answered {s} for {key}: {}", resp.text().await.unwrap_or_default())),
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// Reads every key of `history` from every node (paced, bounded) until two
/// rounds in a row find them all agreeing; the last round either way.
pub async fn final_state(nodes: &[(String, String)], history: &[Op], recorder: &Recorder) -> FinalState {
    let keys: BTreeSet<String> = history.iter().map(|o| o.key.clone()).collect();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut agreed_before = false;
    loop {
        tick.tick().await;
        let at = recorder.elapsed();
        let mut state = FinalState { nodes: BTreeMap::new(), at };
        let mut failed = None;
        for (id, admin) in nodes {
            match read_all(&http, admin, &keys).await {
                Ok(values) => {
                    state.nodes.insert(id.clone(), values);
                }
                Err(e) => failed = Some(e),
            }
        }
        let agree = failed.is_none() && state.nodes.values().collect::<BTreeSet<_>>().len() == 1;
        if (agree && agreed_before) || tokio::time::Instant::now() >= deadline {
            if let Some(e) = failed {
                panic!("a node could not be read once the faults healed: {e}");
            }
            return state;
        }
        agreed_before = agree;
    }
}

/// rollgate-kv's version order: parsed `WALL_MS.LOGICAL@NODE`.
fn versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    Some(a.parse::<Version>().ok()?.cmp(&b.parse::<Version>().ok()?))
}

/// Checks the history: every rule of the consistency model, with TTLs
/// allowed the clock correction's precision as slack (not the drift bound:
/// the nodes judge TTLs by the cluster's clock). `context` is printed with a
/// violation (the seed, the schedule).
pub fn check_history(history: &[Op], final_state: &FinalState, context: String) -> Report {
    let _ = MAX_FORWARD_DRIFT_MS;
    let options = CheckOptions {
        versions: Some(versions),
        ttl_slack: Duration::from_millis(2_500),
        context,
        // Session reads: each client reads its own writes (see the consistency model).
        read_your_writes: true,
    };
    check(history, final_state, &options)
}
