//! The task that reads the running peers' clocks into the node's
//! [`ClockView`](super::clock::ClockView), and logs what changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::clock::{self, CLOCK_READ_TIMEOUT, ClockStatus};
use super::shared::Shared;

/// How many rounds a peer's last reading is kept while it does not answer.
const KEEP_ROUNDS: u32 = 10;

/// The running peers and their HTTP addresses.
fn running_peers(shared: &Shared) -> BTreeMap<String, String> {
    shared
        .view()
        .running()
        .filter(|m| m.record.node_id != shared.node_id)
        .map(|m| (m.record.node_id.clone(), m.record.admin_addr.clone()))
        .collect()
}

/// Reads every running peer's clock once and updates the node's view (a
/// peer that does not answer keeps its last reading for [`KEEP_ROUNDS`]
/// rounds).
pub(super) async fn read_once(shared: &Shared) {
    let peers = running_peers(shared);
    let readings = rollgate::admin::clock::read_clocks(&shared.clock_http, &peers, CLOCK_READ_TIMEOUT).await;
    let kept = shared.tuning.clock_check_interval * KEEP_ROUNDS;
    let offsets = readings.into_iter().map(|(id, r)| (id, r.offset_ms)).collect();
    let (status, old) = shared.clock.update(offsets, &peers.into_keys().collect(), kept);
    if let Some(old) = old {
        let text = clock::describe(status, shared.clock.bound_ms());
        match status {
            ClockStatus::Skewed { .. } | ClockStatus::Ambiguous { .. } => {
                tracing::warn!(node = %shared.node_id, ?status, "{text}");
            }
            ClockStatus::Agrees { .. } if matches!(old, ClockStatus::Skewed { .. } | ClockStatus::Ambiguous { .. }) => {
                tracing::info!(node = %shared.node_id, ?status, "clock back within the drift bound: {text}");
            }
            _ => tracing::debug!(node = %shared.node_id, ?status, "{text}"),
        }
    }
}

/// Reads the peers' clocks every `clock_check_interval`, and at once when
/// the set of running peers changes (a peer that joins is read before this
/// node coordinates a write it counts on, see `write::check_version`), for
/// as long as the node runs.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.tuning.clock_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut views = shared.views.clone();
    let mut running: Vec<String> = running_peers(&shared).into_keys().collect();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                let now: Vec<String> = running_peers(&shared).into_keys().collect();
                if now == running {
                    continue;
                }
                running = now;
            }
        }
        read_once(&shared).await;
    }
}
