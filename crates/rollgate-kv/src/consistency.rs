//! rollgate-kv's consistency model: what a client may rely on, and under
//! which faults. The fault scenarios (`tests/procs/faults`) check every
//! rule below with the testkit's history checker
//! (`rollgate_testkit::history`) while a rolling upgrade runs under a
//! partition, a pause longer than a lease, a clock a day ahead or behind,
//! and the loss of the etcd leader.
//!
//! # The shape of the system
//!
//! Every node takes reads and writes for every key. A write gets a
//! **version** from the coordinating node's hybrid logical clock
//! ([`crate::hlc`]: wall-clock milliseconds, a logical counter, the node
//! id), is stored durably on that node and sent to every connected peer.
//! Each copy is kept by **last writer wins**: of two versions of a key, the
//! higher one stays, on every node, whatever the order they arrive in.
//! Deletes are versioned tombstones and win the same way. A node that was
//! away pulls what it missed (catch-up), and nodes compare digests of key
//! ranges in the background and copy what differs.
//!
//! # Outcomes of a write
//!
//! | answer | meaning |
//! |---|---|
//! | 200 with a `version` | **acknowledged**: stored durably on a majority of the registered members (running or stopped) at that version |
//! | 4xx; 503 `catching_up`, `stopping`, `not_serving`, `clock_skew`; 503 `no_quorum` with 0 stored | **not applied**: nothing was stored anywhere |
//! | 503 `no_quorum` with some stored, 503 `superseded`, `timeout`, a lost connection | **unknown**: the write may or may not take effect, at any time later (as with etcd, whose client cannot tell either); a retry writes it again with a newer version |
//!
//! # What a client may rely on
//!
//! 1. **An acknowledged write is not lost** while a majority of the members
//!    keeps its data dir: it survives node restarts, crashes of a minority,
//!    partitions and rolling upgrades. It is overwritten only by a write with
//!    a higher version: once a write `A` was acknowledged, a write `B` that
//!    started after that (on any node) gets a higher version than `A` when
//!    `B`'s coordinator has seen `A` or its client passes `A`'s version (see
//!    3), and within the drift bound (see *Clocks*) in any case.
//! 2. **Every value read was written**: by a write that was acknowledged or
//!    whose outcome was unknown, never by one that was refused. A read
//!    answers the value and its `x-kv-version`.
//! 6. **A client reads its own writes** (session reads, the default of
//!    [`crate::KvClient`]): a read of a key returns the client's last
//!    acknowledged write of it or a newer value, and never a version older
//!    than one the client read before; whichever node answers, across node
//!    restarts, partitions and rolling upgrades (see *Read levels*).
//! 7. **Linearizable reads** (`?consistency=linearizable`, release 2.0):
//!    a read returns the value of the latest write acknowledged before it
//!    started, or of a newer one, and a linearizable read that starts after
//!    another ended never returns an older version. Writes are ordered by
//!    version, which follows real time for writes that do not overlap
//!    (rule 1; within the drift bound when coordinators' clocks disagree).
//! 3. **A client's own writes keep their order**: [`crate::KvClient`] sends
//!    the highest version it has seen in `x-kv-seen`, and a node stamps the
//!    write above it. Two acknowledged writes of one client to a key, one
//!    after the other, end with the second one's value on every node,
//!    whichever nodes coordinated them. A client that does not send
//!    `x-kv-seen` gets this only from the clocks (within the drift bound).
//! 4. **All nodes converge**: once the faults heal and writes stop, every
//!    node answers the same value for every key (the highest version), after
//!    catch-up and background digest comparison (seconds).
//! 5. **TTLs are honoured within the clock precision**: a value written with
//!    `ttl_s = T` is not answered after `T` seconds past the write's start
//!    plus about 2.5 s (the cluster clock's precision, see *Clocks*), and is
//!    answered until `T` seconds after its acknowledgement minus that
//!    precision by the nodes that stored it. An expired value counts as
//!    deleted at its expiry.
//!
//! What a client may **not** rely on:
//!
//! - **A session read is not linearizable**: it returns at least what the
//!   client itself wrote or read, but may miss another client's write
//!   acknowledged a moment before (a replica the write has not reached yet,
//!   a node cut off from its peers until its lease lapses). A client that
//!   needs every acknowledged write asks for a linearizable read.
//! - **No transactions or compare-and-set**: concurrent writes to a key
//!   from different clients are ordered by version, i.e. by the coordinators'
//!   clocks; the one with the lower version is overwritten even if it was
//!   acknowledged later. Both are acknowledged.
//! - An **unknown** outcome stays unknown: the write may appear later (when a
//!   node that stored it pulls into the others' copies) and then wins or
//!   loses by its version like any other.
//!
//! # Read levels
//!
//! | level | asks | guarantees | costs | older releases (1.x) |
//! |---|---|---|---|---|
//! | session (default) | the client's session token of the key (`x-kv-after`: the newest version of it the client wrote, deleted or read) | rule 6 | a local read plus a version comparison; a node that lacks the version waits up to `session_read_wait` (200 ms) for replication, then answers 503 `behind` and the client asks another node (a majority holds it) | ignore the header; the client checks the answer's `x-kv-version` itself and refuses a stale one, asking the next node (counted in `KvClient::stale_answers`) |
//! | linearizable | `?consistency=linearizable` | rule 7 | one round trip to the peers (protocol v4's `ReadRequest`): the newest version a majority holds, written back to a majority first when fewer hold it; no majority (a partition, too few members on 2.0): 503 `no_quorum`, never stale data | ignore the parameter; the client takes only answers with `x-kv-read: linearizable` and fails with `Unsupported` when no node serves them |
//!
//! The session is the client's: [`crate::KvClient`] keeps a token for up to
//! `session_keys` keys (65,536 by default, the least recently updated
//! forgotten first; a read of a forgotten key is an unchecked local read).
//! A client passes on what another part of the same user wrote with
//! `KvClient::remember`. Prefix scans take `consistency=linearizable` too
//! (each key's newest version among a majority); a default scan is local.
//!
//! # Under which faults
//!
//! | fault | writes | reads |
//! |---|---|---|
//! | one node of three stopped, crashed, restarting (a rolling upgrade) | served by the others (a majority) | served by the others; the restarted node answers 503 `catching_up` until it caught up, then session reads it lacks a version of wait or go elsewhere |
//! | a node partitioned from its peers | refused on its side (503 `no_quorum`, nothing stored); served by the majority side | linearizable reads refused on its side (503 `no_quorum`); session reads answer what the client has seen or go elsewhere; other clients' newer writes may be missing until its liveness lease can no longer be confirmed, then 503 `not_serving` until it confirmed its membership and flags again |
//! | a node paused (SIGSTOP) longer than its lease | requests queued meanwhile are answered 503 `not_serving` when it resumes, not on its stale view | likewise |
//! | a node's clock off by more than the drift bound | that node coordinates none (503 `clock_skew`); the others serve | served; see *Clocks* for TTLs |
//! | one etcd member of three lost | served: the store client moves to the other members; membership and flag changes go on | served |
//! | etcd without a quorum | served on the cached cluster view until the node cannot confirm its liveness lease, then 503 `not_serving`; membership and flag changes are refused | likewise |
//! | a majority of the nodes lost | refused (503 `no_quorum`) | the survivors answer what they hold |
//!
//! # Clocks and the drift bound
//!
//! Versions come from wall clocks, so a wrong clock could order writes
//! wrongly. The **drift bound** ([`crate::hlc::MAX_FORWARD_DRIFT_MS`], one
//! hour) limits how far that can go:
//!
//! - Every node compares its clock with the running members' (their HTTP
//!   `Date` headers, every few seconds) and takes the **median** as the
//!   cluster's clock (`node::clock`). The offset is shown in `/health` and in
//!   `rollgate nodes list` (column `CLOCK`); a node off by more than the
//!   bound logs a warning naming the offset and the fix (NTP).
//! - **No version more than the bound ahead of the cluster's clock is
//!   stored anywhere**: a replica refuses such a version from a peer, a
//!   catch-up or digest pull skips it (counted, logged once), and a node
//!   reading one from its own data dir at start does not adopt it as its
//!   clock's floor. Version arithmetic is checked: at the end of the range a
//!   write is refused, never wrapped.
//! - **A node whose clock is off by more than the bound coordinates no
//!   write** (503 `clock_skew`, nothing stored), ahead or behind. While only
//!   two clocks run and they disagree by more than the bound, nothing says
//!   which is right: a node coordinates a write only if enough connected
//!   peers, each going by its own clock (and counting a peer whose clock it
//!   has not read yet as one that would refuse), would store the version for
//!   a majority, and TTL writes and reads of values with a TTL are refused.
//! - **Within the bound**, a clock ahead by `d` (up to one hour) stamps
//!   versions `d` ahead: a write through it beats later writes to the same
//!   key through correctly clocked nodes for up to `d`, unless those
//!   nodes have seen its version (replicas move their clock above every
//!   version they store) or the writing client passes it in `x-kv-seen`.
//!   Rule 1 holds for writes that follow each other by more than the bound,
//!   and always for clients that pass `x-kv-seen`.
//! - **A write that would lose** to a version its coordinator already holds
//!   is not acknowledged (503 `superseded`, naming the newer version; the
//!   node's clock moves above it, so a retry wins).
//! - **TTLs use the cluster's clock, not the node's**: the expiry is stamped
//!   and judged with the node's wall clock corrected by its offset from the
//!   median (when the offset is over 2 s), so a node a day behind neither
//!   acknowledges values that are already expired nor keeps them a day too
//!   long. The precision is that of the `Date` header (about a second) plus
//!   the correction threshold.
