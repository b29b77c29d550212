//! The demo's readable report.

use std::fmt::Write as _;

use comfy_table::{Table, presets};

use super::DemoReport;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().map(comfy_table::Cell::new).collect::<Vec<_>>());
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t
}

fn lines(t: &Table) -> String {
    t.to_string().lines().map(|l| format!("  {}\n", l.trim_end())).collect()
}

/// The report as text for a terminal.
pub fn render(r: &DemoReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nrollgate-kv demo: {} nodes, {} -> {}, {:.1} s (seed {})\n",
        r.nodes,
        r.from,
        r.to,
        r.duration_ms as f64 / 1000.0,
        r.seed
    );
    let _ = writeln!(
        out,
        "Security: {}\n",
        if r.tls {
            "TLS on: mutual TLS 1.3 on every peer link, HTTPS for the client and the operator (a CA made in the demo's data dir)"
        } else {
            "TLS NOT on every link: see the TLS column below"
        }
    );
    let mut t = table(&["PHASE", "OPS", "OPS/S", "P50 MS", "P99 MS", "MAX MS", "FAILED"]);
    for p in &r.phases {
        t.add_row(vec![
            p.name.clone(),
            p.ops.to_string(),
            format!("{:.0}", p.ops_per_s),
            format!("{:.2}", p.p50_ms),
            format!("{:.2}", p.p99_ms),
            format!("{:.2}", p.max_ms),
            p.failed.to_string(),
        ]);
    }
    let _ = write!(out, "Client load by phase:\n{}", lines(&t));
    let i = &r.upgrade_impact;
    let _ = writeln!(
        out,
        "  During the rolling upgrade: p50 {:.2} ms, p99 {:.2} ms, {:.0} ops/s; steady state: p50 {:.2} ms, p99 {:.2} ms, {:.0} ops/s (p99 x{:.2}, throughput x{:.2})\n",
        i.upgrade.p50_ms,
        i.upgrade.p99_ms,
        i.upgrade.ops_per_s,
        i.steady.p50_ms,
        i.steady.p99_ms,
        i.steady.ops_per_s,
        i.p99_ratio,
        i.throughput_ratio
    );

    // One row per pair of releases and agreed versions (the JSON has every link).
    type Pair = (String, String, u16, u32, bool, bool);
    let mut pairs: std::collections::BTreeMap<Pair, (usize, String)> = Default::default();
    for n in &r.negotiated {
        let (from, to) = if n.from <= n.to { (&n.from, &n.to) } else { (&n.to, &n.from) };
        let e = pairs
            .entry((from.clone(), to.clone(), n.protocol, n.transport, n.authenticated, n.tls))
            .or_insert((0, n.phase.clone()));
        e.0 += 1;
    }
    let mut t = table(&["RELEASES", "PROTOCOL", "TRANSPORT", "AUTHENTICATED", "TLS", "LINKS", "FIRST SEEN"]);
    let yes = |b: bool| if b { "yes".to_string() } else { "no".to_string() };
    for ((from, to, protocol, transport, auth, tls), (links, phase)) in pairs {
        t.add_row(vec![
            format!("{from} <-> {to}"),
            format!("v{protocol}"),
            transport.to_string(),
            yes(auth),
            yes(tls),
            links.to_string(),
            phase,
        ]);
    }
    let _ = write!(out, "Versions agreed between nodes:\n{}\n", lines(&t));

    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let _ = writeln!(out, "Flags enabled by the operator step: {}", list(&r.flags_enabled_by_demo));
    let _ = writeln!(out, "Flags enabled at the end:           {}", list(&r.flags_enabled));
    let _ = writeln!(out, "Migrations finished:                {}", list(&r.migrations_done));
    let _ = writeln!(out, "Cluster formats:                    {}", list(&r.service_formats));
    let _ = writeln!(out, "Release floor (finalized):          {}", r.release_floor.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "New features used:                  {}", list(&r.features_used));
    let _ = writeln!(out, "Final releases:                     {}", list(&r.final_releases));
    let _ = writeln!(out, "Operations:                         {} ok, {} failed", r.ops_ok, r.ops_failed);
    let _ = writeln!(
        out,
        "Acknowledged writes:                {} keys read back from every node, {} lost",
        r.keys_checked, r.acked_writes_lost
    );
    let _ = writeln!(out, "Reads of acknowledged writes:       {} checked, {} missed", r.reads_checked, r.missed_reads);
    if !r.problems.is_empty() {
        let _ = writeln!(out, "\nProblems:");
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    let _ = writeln!(
        out,
        "\nResult: {}",
        if r.passed() {
            "PASS: zero failed operations, zero lost acknowledged writes, zero missed reads"
        } else {
            "FAIL: see the problems above"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::load::PhaseReport;
    use super::super::{Negotiation, UpgradeImpact};
    use super::*;

    fn phase(name: &str) -> PhaseReport {
        PhaseReport {
            name: name.into(),
            ops: 10,
            failed: 0,
            duration_ms: 1000,
            ops_per_s: 10.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
        }
    }

    fn report(tls: bool) -> DemoReport {
        let link = Negotiation {
            from: "1.2".into(),
            to: "1.2".into(),
            protocol: 3,
            transport: 3,
            from_node: "n1".into(),
            to_node: "n2".into(),
            authenticated: true,
            tls,
            phase: "steady at 1.0".into(),
        };
        DemoReport {
            ops_ok: 10,
            ops_failed: 0,
            acked_writes_lost: 0,
            keys_checked: 10,
            reads_checked: 5,
            missed_reads: 0,
            final_releases: vec!["1.2".into()],
            flags_enabled: Vec::new(),
            flags_enabled_by_demo: Vec::new(),
            phases: vec![phase("steady at 1.0")],
            upgrade_impact: UpgradeImpact {
                steady: phase("steady"),
                upgrade: phase("rolling upgrade"),
                p99_ratio: 1.0,
                p50_ratio: 1.0,
                throughput_ratio: 1.0,
            },
            negotiated: vec![link],
            features_used: Vec::new(),
            migrations_done: Vec::new(),
            release_floor: None,
            service_formats: Vec::new(),
            problems: Vec::new(),
            nodes: 3,
            from: "1.0".into(),
            to: "1.2".into(),
            seed: 7,
            duration_ms: 1000,
            restarts: Vec::new(),
            upgrade_windows: Vec::new(),
            tls,
        }
    }

    #[test]
    fn the_readable_report_says_whether_tls_was_on() {
        let on = render(&report(true));
        assert!(on.contains("Security: TLS on: mutual TLS 1.3 on every peer link, HTTPS"), "{on}");
        assert!(on.contains("TLS") && on.contains("1.2 <-> 1.2"), "{on}");
        let off = render(&report(false));
        assert!(off.contains("Security: TLS NOT on every link"), "{off}");
    }
}
