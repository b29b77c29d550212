//! The model's transitions: which actions the planner (and the environment)
//! offer in a state, and what executing each does. Every protocol decision
//! is a planner call; what is here is the executor and the store.

use std::collections::BTreeSet;

use super::*;

impl FlagModel {
    /// Every action enabled in `st`. Bound: views lag by at most one store
    /// change (a node may act on the previous view, and its commit then meets
    /// the newer store), so the store changes again only once every node that
    /// reaches it has seen the last change.
    pub(super) fn offer(&self, st: &State, out: &mut Vec<Action>) {
        self.offer_all(st, out);
        let quiet = st.nodes.iter().all(|n| n.cut || n.up.as_ref().is_none_or(|u| u.seen == st.store));
        if !quiet {
            out.retain(|a| !self.changes_store(st, a));
        }
    }

    fn changes_store(&self, st: &State, a: &Action) -> bool {
        match a {
            Action::Tick
            | Action::SlowTick(_)
            | Action::Enable(..)
            | Action::Disable(..)
            | Action::Recover(..)
            | Action::WriteAck(..)
            | Action::Join(..)
            | Action::BootDone(_)
            | Action::Forget(_) => true,
            Action::DriverAct(i) => {
                let up = st.nodes[*i as usize].up.as_ref().expect("up");
                matches!(self.decide(st, *i as usize, &self.view(&up.seen)), Some(DriveAction::Commit { .. }))
            }
            _ => false,
        }
    }

    fn offer_all(&self, st: &State, out: &mut Vec<Action>) {
        let b = &st.budget;
        if self.next_event(st).is_some() {
            out.push(Action::Tick);
        }
        for i in 0..N {
            let node = &st.nodes[i];
            let Some(up) = &node.up else {
                self.offer_down(st, i, out);
                continue;
            };
            let i8 = i as u8;
            if b.slow > 0 && st.time < self.max_time && node.cut {
                out.push(Action::SlowTick(i8));
            }
            if !node.cut && up.seen != st.store {
                out.push(Action::Deliver(i8));
            }
            // Faults while a protocol runs (before, they only repeat a boot).
            let in_progress = st.store.flags.iter().any(|(r, _)| !matches!(r, Rec::Disabled | Rec::Enabled));
            if node.cut {
                out.push(Action::Heal(i8));
            } else if b.cuts > 0 && in_progress {
                out.push(Action::Cut(i8));
            }
            if b.crashes > 0 && in_progress {
                out.push(Action::Crash(i8));
            }
            if !matches!(self.serving(st, i), Serving::Serve { .. }) {
                continue;
            }
            self.offer_driver(st, i, up, out);
            self.offer_runs(st, i, up, out);
            if !up.booted && up.driver.is_none() && up.queue.is_empty() {
                let required = plan::required_at_boot(&self.view(&up.seen), self.reg(up.rel));
                if !matches!(required, RequiredState::Wait { .. }) {
                    out.push(Action::BootDone(i8));
                }
            }
        }
        if b.forgets > 0 {
            for i in 0..N {
                if st.store.members[i].is_some() && !st.store.live[i] {
                    out.push(Action::Forget(i as u8));
                }
            }
        }
    }

    fn offer_down(&self, st: &State, i: usize, out: &mut Vec<Action>) {
        match st.store.members[i] {
            Some((rel, _, _)) if st.budget.restarts > 0 => out.push(Action::Join(i as u8, rel)),
            None if st.budget.joins > 0 => out.extend(
                self.joins.iter().filter(|(n, _)| *n as usize == i).map(|(_, rel)| Action::Join(i as u8, *rel)),
            ),
            _ => {}
        }
    }

    fn offer_driver(&self, st: &State, i: usize, up: &Up, out: &mut Vec<Action>) {
        let (i8, cut) = (i as u8, st.nodes[i].cut);
        match self.decide(st, i, &self.view(&up.seen)) {
            Some(DriveAction::RunStep | DriveAction::Ended { .. }) => out.push(Action::DriverAct(i8)),
            Some(DriveAction::Commit { .. }) if !cut => out.push(Action::DriverAct(i8)),
            Some(_) => {}
            None if up.queue.is_empty() && !cut => {
                for f in 0..2u8 {
                    // The operator asks n1 (n1 and n2 start alike: asking n2 would mirror every path).
                    if st.budget.enables > 0 && i == 0 {
                        out.push(Action::Enable(i8, f));
                    }
                    if st.budget.disables > 0 && f == 1 && i == 0 {
                        out.push(Action::Disable(i8, f));
                    }
                    let driving = Self::driving(up);
                    let me = self.me(i, up, &driving);
                    if plan::recovery_for(&self.view(&up.seen), self.reg(up.rel), FLAGS[f as usize], &me)
                        != Recovery::Nothing
                    {
                        out.push(Action::Recover(i8, f));
                    }
                }
            }
            None => {}
        }
        if let Some((_, drv)) = &up.driver {
            let running = match drv {
                Drv::E(d) => d.cluster_step == StepState::Running,
                Drv::D(d) => d.hook == StepState::Running,
            };
            if running {
                out.push(Action::StepDone(i8, true));
                if st.budget.fails > 0 {
                    out.push(Action::StepDone(i8, false));
                }
            }
        }
    }

    fn offer_runs(&self, st: &State, i: usize, up: &Up, out: &mut Vec<Action>) {
        let i8 = i as u8;
        for action in self.step_actions(up, i) {
            out.push(match action {
                StepAction::Start { flag, .. } => Action::StartRun(i8, flag_index(&flag) as u8),
                StepAction::Abort { flag, .. } => Action::AbortRun(i8, flag_index(&flag) as u8),
                StepAction::AckDisable { flag, .. } => Action::AckDisable(i8, flag_index(&flag) as u8),
            });
        }
        for (f, _, _, pc) in &up.runs {
            match pc {
                RunPc::Running => {
                    out.push(Action::FinishRun(i8, *f, true));
                    if st.budget.fails > 0 {
                        out.push(Action::FinishRun(i8, *f, false));
                    }
                }
                RunPc::Acking(_) if !st.nodes[i].cut => out.push(Action::WriteAck(i8, *f)),
                _ => {}
            }
        }
    }

    /// Executes `action` on `n`; `None`: nothing changes.
    pub(super) fn step(&self, n: &mut State, action: Action) -> Option<()> {
        match action {
            Action::Tick => self.tick(n, None),
            Action::SlowTick(i) => {
                n.budget.slow -= 1;
                self.tick(n, Some(i as usize));
            }
            Action::Deliver(i) => {
                // The probe of the last tick saw this epoch: delivering it confirms the view.
                let (store, local) = (n.store.clone(), self.local(n, i as usize).0);
                let up = n.nodes[i as usize].up.as_mut()?;
                self.deliver(up, store, &mut n.ghost);
                up.view_at = local;
            }
            Action::Enable(i, f) => {
                n.budget.enables -= 1;
                self.begin(n, i as usize, f, false)?;
            }
            Action::Disable(i, f) => {
                n.budget.disables -= 1;
                self.begin(n, i as usize, f, true)?;
            }
            Action::Recover(i, f) => self.recover(n, i as usize, f)?,
            Action::DriverAct(i) => self.driver_act(n, i as usize)?,
            Action::StepDone(i, ok) => {
                if !ok {
                    n.budget.fails -= 1;
                }
                let now = self.local(n, i as usize);
                let (_, drv) = n.nodes[i as usize].up.as_mut()?.driver.as_mut()?;
                let state = if ok { StepState::Done { at: now } } else { StepState::Failed("step failed".into()) };
                match drv {
                    Drv::E(d) => d.cluster_step = state,
                    Drv::D(d) => d.hook = state,
                }
            }
            Action::StartRun(i, f) | Action::AckDisable(i, f) => {
                let up = n.nodes[i as usize].up.as_mut()?;
                let (a, rev) = (up.seen.flags[f as usize].0.clone(), up.seen.flags[f as usize].1);
                let (Rec::Enabling { attempt, .. } | Rec::Disabling { attempt, .. }) = a else { return None };
                let pc = if matches!(action, Action::StartRun(..)) { RunPc::Running } else { RunPc::Acking(true) };
                up.runs.push((f, attempt, rev, pc));
            }
            Action::AbortRun(i, f) => n.nodes[i as usize].up.as_mut()?.runs.retain(|r| r.0 != f),
            Action::FinishRun(i, f, ok) => {
                if !ok {
                    n.budget.fails -= 1;
                }
                let up = n.nodes[i as usize].up.as_mut()?;
                let run = up.runs.iter_mut().find(|r| r.0 == f && r.3 == RunPc::Running)?;
                run.3 = RunPc::Acking(ok);
                if ok {
                    n.ghost.prepared.insert((i, up.inc, f));
                }
            }
            Action::WriteAck(i, f) => self.write_ack(n, i as usize, f)?,
            Action::Join(i, rel) => self.join(n, i as usize, rel),
            Action::BootDone(i) => self.boot_done(n, i as usize)?,
            Action::Crash(i) => {
                n.budget.crashes -= 1;
                n.nodes[i as usize].up = None;
                n.nodes[i as usize].cut = false;
            }
            Action::Cut(i) => {
                n.budget.cuts -= 1;
                n.nodes[i as usize].cut = true;
            }
            Action::Heal(i) => n.nodes[i as usize].cut = false,
            Action::Forget(i) => {
                n.budget.forgets -= 1;
                let (s, name) = (&mut n.store, NAMES[i as usize].to_string());
                self.apply(s, &[ViewOp::RemoveMember(name)]);
            }
        }
        Some(())
    }

    /// Store time passes (node `slow`'s clock does not): leases expire;
    /// every up node that reaches the store keeps its lease alive (a new one
    /// when it expired) and confirms its view when it is current.
    fn tick(&self, n: &mut State, slow: Option<usize>) {
        let to = match slow {
            Some(_) => n.time + 1,
            None => self.next_event(n).unwrap_or(n.time + 1),
        };
        if let Some(i) = slow {
            n.nodes[i].slow += to - n.time;
        }
        n.time = to;
        for i in 0..N {
            if n.store.live[i] && n.expires[i] <= n.time {
                n.store.live[i] = false;
                n.store.rev += 1;
            }
        }
        for i in 0..N {
            let local = self.local(n, i).0;
            let (store, cut) = (&mut n.store, n.nodes[i].cut);
            let Some(up) = n.nodes[i].up.as_mut().filter(|_| !cut) else { continue };
            if store.members[i].is_none_or(|(_, inc, _)| inc != up.inc) {
                continue; // forgotten or replaced: its heartbeat writes nothing
            }
            if !store.live[i] {
                store.live[i] = true;
                store.rev += 1;
            }
            n.expires[i] = n.time + BOUNDS.ttl_ms;
            up.lease_at = local;
        }
        // A node that reaches the store catches up before time matters (its
        // view lags by far less than a lease): its probe confirms the view.
        for i in 0..N {
            let (store, local, cut) = (n.store.clone(), self.local(n, i).0, n.nodes[i].cut);
            let Some(up) = n.nodes[i].up.as_mut().filter(|_| !cut) else { continue };
            self.deliver(up, store, &mut n.ghost);
            up.view_at = local;
        }
    }

    /// A view arrives (and the same view again, a duplicate: ignored).
    fn deliver(&self, up: &mut Up, store: Store, ghost: &mut Ghost) {
        let view = self.view(&store);
        if let Some(bits) = plan::apply_view(up.bits_rev, &view, self.reg(up.rel)) {
            up.bits_rev = Some(store.rev);
            for (bit, flag) in up.bits.iter_mut().zip(FLAGS) {
                *bit = self.reg(up.rel).id(flag).is_some_and(|id| bits[id.index()]);
            }
        }
        ghost.bad_dup |= plan::apply_view(up.bits_rev, &view, self.reg(up.rel)).is_some();
        up.seen = store;
    }

    /// The operator's enable or disable on node i (an epoch-fenced update).
    fn begin(&self, n: &mut State, i: usize, f: u8, disable: bool) -> Option<()> {
        let attempt = n.next_attempt;
        let up = n.nodes[i].up.as_ref()?;
        let (flag, reg, view) = (FLAGS[f as usize], self.reg(up.rel), self.view(&n.store));
        let none = BTreeSet::new();
        let me = self.me(i, up, &none);
        let id = format!("a{attempt}");
        let rec = if disable {
            match plan::begin_disable(&view, reg, flag, &id, &me) {
                Ok(BeginDisable::Write(rec)) => rec,
                Ok(BeginDisable::AlreadyDisabled) => return None,
                Err(_) => {
                    n.ghost.refused_disable = true;
                    return Some(());
                }
            }
        } else {
            match plan::begin_enable(&view, reg, flag, &id, &me) {
                Ok(Begin::Write(rec)) => rec,
                _ => return None,
            }
        };
        self.takeover_check(n, f);
        self.apply(&mut n.store, &[ViewOp::PutFlag(flag.to_string(), *rec)]);
        n.next_attempt += 1;
        let (rev, now) = (n.store.rev, self.local(n, i));
        let drv = if disable {
            Drv::D(DisableDriver { attempt: id, revision: rev, started: now, hook: StepState::NotStarted })
        } else {
            Drv::E(EnableDriver { attempt: id, revision: rev, started: now, cluster_step: StepState::NotStarted })
        };
        n.nodes[i].up.as_mut()?.driver = Some((f, drv));
        Some(())
    }

    /// P8: a takeover must not replace a live owner (up with the record's
    /// incarnation, reaching the store, driving the flag, lease alive).
    fn takeover_check(&self, n: &mut State, f: u8) {
        let (Rec::Enabling { owner, inc, .. } | Rec::Disabling { owner, inc, .. }) = n.store.flags[f as usize].0 else {
            return;
        };
        let o = owner as usize;
        let live = n.nodes[o].up.as_ref().is_some_and(|u| {
            u.inc == inc && (u.driver.as_ref().is_some_and(|(g, _)| *g == f) || u.queue.iter().any(|q| q.0 == f))
        });
        if live && !n.nodes[o].cut && n.store.live[o] {
            n.ghost.replaced_live_owner = true;
        }
    }

    fn recover(&self, n: &mut State, i: usize, f: u8) -> Option<()> {
        let up = n.nodes[i].up.as_ref()?;
        let driving = Self::driving(up);
        let flag = FLAGS[f as usize];
        match plan::recovery_for(&self.view(&up.seen), self.reg(up.rel), flag, &self.me(i, up, &driving)) {
            Recovery::Nothing => None,
            Recovery::ResumeEnable => {
                self.begin(n, i, f, false)?;
                n.ghost.resumed = true;
                Some(())
            }
            Recovery::FinishDisable => self.begin(n, i, f, true),
            Recovery::RollBackEnable { .. } => {
                // The commit re-decides on the view it is fenced on.
                let view = self.view(&n.store);
                let me = self.me(i, up, &driving);
                let Recovery::RollBackEnable { reason } = plan::recovery_for(&view, self.reg(up.rel), flag, &me) else {
                    return None;
                };
                let rec = plan::rolled_back(view.flags.get(flag)?, &reason, 0);
                self.apply(&mut n.store, &[ViewOp::PutFlag(flag.to_string(), rec)]);
                n.ghost.rolled_back = true;
                Some(())
            }
        }
    }

    fn driver_act(&self, n: &mut State, i: usize) -> Option<()> {
        let up = n.nodes[i].up.as_ref()?;
        let f = up.driver.as_ref()?.0 as usize;
        match self.decide(n, i, &self.view(&up.seen))? {
            DriveAction::RunStep => {
                let (_, drv) = n.nodes[i].up.as_mut()?.driver.as_mut()?;
                match drv {
                    Drv::E(d) => d.cluster_step = StepState::Running,
                    Drv::D(d) => d.hook = StepState::Running,
                }
            }
            DriveAction::Ended { .. } => self.next_driver(n, i),
            DriveAction::Wait { .. } => return None,
            DriveAction::Commit { then, .. } => {
                // Re-decided on the view the commit is fenced on (the current store).
                let fresh = self.view(&n.store);
                let Some(DriveAction::Commit { ops, then: again }) = self.decide(n, i, &fresh) else { return None };
                if again != then {
                    return None;
                }
                self.commit_ghost(n, f, &then, &fresh);
                self.apply(&mut n.store, &ops);
                self.next_driver(n, i);
            }
        }
        Some(())
    }

    /// What the properties need to know about a finishing commit.
    fn commit_ghost(&self, n: &mut State, f: usize, then: &Outcome, view: &ClusterView) {
        let flag = FLAGS[f];
        match then {
            Outcome::Enabled => {
                n.ghost.disable_done[f] = false;
                n.ghost.enabled_f2 |= f == 1;
                let attempt = match n.store.flags[f].0 {
                    Rec::Enabling { attempt, .. } => attempt,
                    _ => return,
                };
                for (i, m) in n.store.members.iter().enumerate() {
                    let Some((rel, inc, _)) = *m else { continue };
                    let reg = self.reg(rel);
                    let acked = n.store.acks[f][i] == Some((attempt, inc, true));
                    if !reg.supports(flag) || (reg.get(flag).is_some_and(|d| d.has_node_step()) && !acked) {
                        n.ghost.bad_enable = true;
                    }
                }
            }
            Outcome::Disabled => {
                n.ghost.disable_done[f] = true;
                n.ghost.bad_disable |= view.members.values().any(|m| m.record.required_flags.contains(flag));
            }
            Outcome::RolledBack { .. } => n.ghost.rolled_back = true,
            Outcome::ReEnabled { .. } => {}
        }
    }

    /// The driver ended: the next flag the join wrote, if any.
    fn next_driver(&self, n: &mut State, i: usize) {
        let now = self.local(n, i);
        let Some(up) = n.nodes[i].up.as_mut() else { return };
        up.driver = None;
        if !up.queue.is_empty() {
            let (f, a, rev) = up.queue.remove(0);
            let d = EnableDriver {
                attempt: format!("a{a}"),
                revision: rev,
                started: now,
                cluster_step: StepState::NotStarted,
            };
            up.driver = Some((f, Drv::E(d)));
        }
    }

    /// The acknowledgement transaction `plan::ack_txn` builds, evaluated by the store.
    fn write_ack(&self, n: &mut State, i: usize, f: u8) -> Option<()> {
        let up = n.nodes[i].up.as_mut()?;
        let run = up.runs.iter_mut().find(|r| r.0 == f && matches!(r.3, RunPc::Acking(_)))?;
        let RunPc::Acking(ok) = run.3 else { return None };
        let ack = FlagAck {
            attempt: format!("a{}", run.1),
            error: (!ok).then(|| "step failed".into()),
            at_ms: 0,
            incarnation: up.inc,
        };
        let txn = plan::ack_txn(&self.keys, FLAGS[f as usize], NAMES[i], &ack, run.2).ok()?;
        run.3 = RunPc::Done;
        let holds = txn.compares.iter().all(|c| {
            let flag = c.key.strip_prefix(ROOT).and_then(|k| k.strip_prefix("flags/")).map(flag_index);
            matches!((flag, &c.target), (Some(g), CompareTarget::ModRevision(r)) if n.store.flags[g].1 == *r)
        });
        if !holds {
            n.ghost.ack_refused = true;
            return Some(());
        }
        for op in &txn.success {
            let TxnOp::Put { value, .. } = op else { continue };
            let written: FlagAck = serde_json::from_slice(value).ok()?;
            let attempt = attempt_of(&written.attempt);
            let current = match n.store.flags[f as usize].0 {
                Rec::Enabling { attempt: a, .. } | Rec::Disabling { attempt: a, .. } => Some(a),
                _ => None,
            };
            n.ghost.late_ack |= current != Some(attempt);
            n.store.acks[f as usize][i] = Some((attempt, written.incarnation, written.error.is_none()));
        }
        n.store.rev += 1;
        Some(())
    }

    /// A node (re)starts: boot check, the join (`plan_join` on the view the
    /// join commits against), its live key, the per-node steps of enabled flags.
    fn join(&self, n: &mut State, i: usize, rel: Rel) {
        if n.store.members[i].is_some() {
            n.budget.restarts -= 1;
        } else {
            n.budget.joins -= 1;
        }
        let reg = self.reg(rel);
        let view = self.view(&n.store);
        if !plan::unknown_present(&view.flags, &reg.names()).is_empty() {
            n.ghost.join_refused = true;
            return;
        }
        let inc = n.next_inc;
        n.next_inc += 1;
        let record = self.record(i, rel, inc, true);
        let none = BTreeSet::new();
        let me = Me { id: NAMES[i], incarnation: inc, driving: &none, bits_revision: 0, wall_ms: 0, rules: self.rules };
        let mut next = n.next_attempt;
        let mut ids = || {
            next += 1;
            format!("a{}", next - 1)
        };
        let Ok(plan) = plan::plan_join(&view, reg, &record, &me, &mut ids) else {
            n.ghost.join_refused = true;
            return;
        };
        n.next_attempt = next;
        self.apply(&mut n.store, &plan.ops);
        n.store.live[i] = true;
        n.expires[i] = n.time + BOUNDS.ttl_ms;
        let (rev, local) = (n.store.rev, self.local(n, i).0);
        for flag in &plan.boot_steps {
            n.ghost.prepared.insert((i as u8, inc, flag_index(flag) as u8));
        }
        let queue = plan.drive.iter().map(|(f, a)| (flag_index(f) as u8, attempt_of(a), rev)).collect();
        let mut up = Up {
            rel,
            inc,
            seen: n.store.clone(),
            bits: [false; 2],
            bits_rev: None,
            lease_at: local,
            view_at: local,
            booted: false,
            driver: None,
            queue,
            runs: Vec::new(),
        };
        self.deliver(&mut up, n.store.clone(), &mut n.ghost);
        n.nodes[i] = NodeSt { up: Some(up), cut: false, slow: n.nodes[i].slow };
        self.next_driver(n, i);
    }

    fn boot_done(&self, n: &mut State, i: usize) -> Option<()> {
        let up = n.nodes[i].up.as_mut()?;
        match plan::required_at_boot(&self.view(&up.seen), self.reg(up.rel)) {
            RequiredState::Ready => up.booted = true,
            RequiredState::Wait { .. } => return None,
            RequiredState::Refuse { .. } => {
                // The node refuses to start and leaves: a member declared stopped.
                let (rel, inc) = (up.rel, up.inc);
                n.nodes[i].up = None;
                let record = self.record(i, rel, inc, false);
                self.apply(&mut n.store, &[ViewOp::PutMember(record)]);
                n.store.live[i] = false;
            }
        }
        Some(())
    }

    /// What the runtime does with a fenced node: its drivers stop and its
    /// runs are aborted (`plan::serving` decides).
    pub(super) fn settle_fences(&self, n: &mut State) {
        for i in 0..N {
            if n.nodes[i].up.is_none() || matches!(self.serving(n, i), Serving::Serve { .. }) {
                continue;
            }
            n.ghost.fenced_cut |= n.nodes[i].cut;
            let up = n.nodes[i].up.as_mut().expect("up");
            up.driver = None;
            up.queue.clear();
            up.runs.clear();
        }
    }
}
