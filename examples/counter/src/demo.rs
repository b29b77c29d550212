//! `counter demo`: a rolling upgrade from 1.0 to 1.1 in one process, on an
//! embedded metadata store (`redb:`) in a temp dir.
//!
//! 1. Three nodes start at 1.0; n1 adds to n2 and n3 (protocol v1).
//! 2. One by one, each node stops and starts again at 1.1 on the same data
//!    dir, then adds to the others: each link negotiates its own versions
//!    (v1 with a 1.0 peer, v2 and transport `total_entries` between 1.1 peers).
//! 3. The operator's step: flag `entry_from_v2` is enabled through n1's
//!    admin API, as `rollgate flags enable` does; every node sees it.
//! 4. New entries carry `from@2`; old ones are read through `from@1`.
//! 5. A 1.0 node can no longer start: the point of no return.

use std::path::Path;

use rollgate::api::flags::{EnableReport, EnableRequest};
use rollgate::handshake::ClusterSecret;
use rollgate::store::StoreOptions;

use crate::Error;
use crate::entries::{self, StoredEntry};
use crate::node::{self, Counter, Exchange, Options};
use crate::releases::{ENTRY_FROM_V2, Release};
use crate::transport_versions;

/// A request one node made to another.
#[derive(Clone, Debug)]
pub struct Link {
    /// Who asked.
    pub from: String,
    /// Its release.
    pub from_release: Release,
    /// What the link negotiated and the answer.
    pub exchange: Exchange,
}

/// What the demo did.
#[derive(Debug, Default)]
pub struct Report {
    /// Every `Add`, in order.
    pub links: Vec<Link>,
    /// A `Get` (protocol v2) once every node runs 1.1.
    pub get: Option<Link>,
    /// What the admin API enabled.
    pub enabled: EnableReport,
    /// n2's entries at the end: from 1.0 and 1.1 senders, before and after the flag.
    pub entries: Vec<(u64, StoredEntry)>,
    /// Why a 1.0 node could not start once the flag was enabled.
    pub downgrade_refused: String,
}

/// Runs the demo, telling `say` what happens.
pub async fn run(say: &mut dyn FnMut(String)) -> Result<Report, Error> {
    let dir = tempfile::tempdir().map_err(|source| Error::Io { what: "creating a temp dir".into(), source })?;
    let store =
        rollgate::store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default())
            .await?;
    let token = format!("{:032x}", rand::random::<u128>());
    let token_file = dir.path().join("admin.token");
    write_owner_only(&token_file, &token)
        .map_err(|source| Error::Io { what: format!("writing {}", token_file.display()), source })?;
    let secret = ClusterSecret::new(rand::random::<[u8; 32]>()).map_err(|e| Error::Failed(e.to_string()))?;
    let options = |id: &str, release| Options {
        id: id.to_string(),
        release,
        data_dir: dir.path().join(id),
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        admin_token: token.clone(),
        secret: secret.clone(),
    };
    let mut report = Report::default();

    say("== n1, n2, n3 start at release 1.0".into());
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(Counter::start(options(id, Release::V1_0), store.clone()).await?);
    }
    settle(&nodes).await?;
    add_to_others(&nodes, 0, &mut report, say).await?;

    for i in 0..nodes.len() {
        let id = nodes[i].id().to_string();
        say(format!("== {id} restarts at release 1.1"));
        nodes.remove(i).stop().await?;
        nodes.insert(i, Counter::start(options(&id, Release::V1_1), store.clone()).await?);
        settle(&nodes).await?;
        add_to_others(&nodes, i, &mut report, say).await?;
    }

    say(format!("== every node runs 1.1: the operator enables {ENTRY_FROM_V2}"));
    say(format!(
        "$ rollgate --node {} --token-file {} flags enable {ENTRY_FROM_V2}   # the demo sends this request",
        nodes[0].admin_url(),
        token_file.display()
    ));
    report.enabled = enable(&nodes[0].admin_url(), &token_file, ENTRY_FROM_V2).await?;
    say(format!("enabled: {}", report.enabled.enabled.join(", ")));
    for n in &nodes {
        n.wait_enabled(ENTRY_FROM_V2).await?;
    }
    add_to_others(&nodes, 0, &mut report, say).await?;
    let get = nodes[0].total_of(nodes[2].id()).await?;
    say(format!("n1 -> n3 Get ({}): total {}", get.link.protocol, get.total.value));
    report.get = Some(Link { from: nodes[0].id().into(), from_release: nodes[0].release(), exchange: get });

    say("== n2's entries: the newest `from` key each one has".into());
    report.entries = nodes[1].entries()?;
    for (seq, entry) in &report.entries {
        let keys: Vec<String> = entry.features.entries().map(|(k, _)| k.to_string()).collect();
        let sender =
            entries::sender(entry)?.unwrap_or_else(|| entries::Sender { node: "?".into(), release: String::new() });
        let release = if sender.release.is_empty() { "not recorded" } else { &sender.release };
        say(format!("#{seq}: +{} from {} (release {release}); keys {}", entry.core.by, sender.node, keys.join(", ")));
    }

    say("== n3 tries to go back to 1.0".into());
    nodes.remove(2).stop().await?;
    match Counter::start(options("n3", Release::V1_0), store.clone()).await {
        Err(refused @ Error::Node(_)) => report.downgrade_refused = refused.to_string(),
        Err(other) => return Err(other),
        Ok(n) => {
            n.stop().await?;
            return Err(Error::Failed("a 1.0 node started although a 1.1 flag is enabled".into()));
        }
    }
    say(format!("refused: {}", report.downgrade_refused));
    for n in nodes {
        n.stop().await?;
    }
    Ok(report)
}

/// Waits until every node's view has every node's latest join.
async fn settle(nodes: &[Counter]) -> Result<(), Error> {
    let revision = nodes.iter().map(|n| n.node().view().revision).max().unwrap_or(0);
    for n in nodes {
        n.wait_for_revision(revision).await?;
    }
    Ok(())
}

/// `nodes[from]` adds 1 to every other node and says what each link negotiated.
async fn add_to_others(
    nodes: &[Counter],
    from: usize,
    report: &mut Report,
    say: &mut dyn FnMut(String),
) -> Result<(), Error> {
    let asker = &nodes[from];
    for peer in nodes.iter().filter(|n| n.id() != asker.id()) {
        let x = asker.add_to(peer.id(), 1).await?;
        let count = match x.total.entries {
            Some(n) => format!("entries: {n}"),
            None => "entry count not on the wire".to_string(),
        };
        let transport_of = transport_versions::SET.release_of(x.link.transport).unwrap_or_default();
        say(format!(
            "{} ({}) -> {} ({}): protocol {}, transport {} ({transport_of}): total {} ({count})",
            asker.id(),
            asker.release().name(),
            x.link.peer_node_id,
            x.link.peer_release,
            x.link.protocol,
            x.link.transport,
            x.total.value
        ));
        report.links.push(Link { from: asker.id().to_string(), from_release: asker.release(), exchange: x });
    }
    Ok(())
}

/// What `rollgate --node URL --token-file FILE flags enable FLAG` does.
async fn enable(admin_url: &str, token_file: &Path, flag: &str) -> Result<EnableReport, Error> {
    let token = rollgate::admin::read_token_file(token_file).map_err(|e| Error::Failed(e.to_string()))?;
    let answer = reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .timeout(node::WAIT)
        .build()?
        .post(format!("{admin_url}/admin/flags/enable"))
        .bearer_auth(token)
        .json(&EnableRequest::flags([flag]))
        .send()
        .await?;
    if !answer.status().is_success() {
        let status = answer.status();
        let body = answer.text().await?;
        return Err(Error::Failed(format!("enabling {flag}: {status}: {}", rollgate::util::shorten(&body))));
    }
    Ok(answer.json().await?)
}

/// Writes a secret file readable by its owner only (nodes refuse others).
fn write_owner_only(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}
