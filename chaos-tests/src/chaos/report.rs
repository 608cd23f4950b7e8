//! The run's outputs: `history.json` (the run's options, every event and
//! the verdicts) and `report.html`, a page with no external resources: the
//! verdicts, an SVG timeline of faults and node events above throughput
//! (acknowledged publishes and deliveries per second) and publish latency
//! (median and maximum per second), and the violations with the faults
//! around each.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::checker::Verdict;
use super::history::{Event, NodeChange, Outcome, Stamped};

/// What `history.json` holds.
#[derive(Serialize)]
pub struct RunRecord<'a> {
    pub options: &'a serde_json::Value,
    pub verdicts: &'a [Verdict],
    pub events: &'a [Stamped],
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Per-second series: (acked publishes, deliveries, median latency, max latency).
fn series(events: &[Stamped], secs: usize) -> Vec<(u32, u32, u64, u64)> {
    let mut acked = vec![0u32; secs];
    let mut delivered = vec![0u32; secs];
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); secs];
    for e in events {
        let s = (e.t_ms / 1000) as usize;
        if s >= secs {
            continue;
        }
        match &e.event {
            Event::Publish {
                outcome: Outcome::Acked,
                latency_ms,
                sent_ms,
                ..
            } => {
                let s = (*sent_ms / 1000) as usize;
                acked[s.min(secs - 1)] += 1;
                if let Some(l) = latency_ms {
                    lat[s.min(secs - 1)].push(*l);
                }
            }
            Event::Deliver { .. } => delivered[s] += 1,
            _ => {}
        }
    }
    (0..secs)
        .map(|i| {
            let l = &mut lat[i];
            l.sort_unstable();
            (
                acked[i],
                delivered[i],
                l.get(l.len() / 2).copied().unwrap_or(0),
                l.last().copied().unwrap_or(0),
            )
        })
        .collect()
}

fn polyline(points: &[(f64, f64)], color: &str) -> String {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    format!(
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" points=\"{}\"/>",
        pts.join(" ")
    )
}

/// Writes `history.json` and `report.html` into `dir`.
pub fn write(
    dir: &Path,
    options: &serde_json::Value,
    events: &[Stamped],
    verdicts: &[Verdict],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let record = RunRecord {
        options,
        verdicts,
        events,
    };
    std::fs::write(dir.join("history.json"), serde_json::to_vec(&record)?)?;
    std::fs::write(dir.join("report.html"), html(options, events, verdicts))?;
    Ok(())
}

fn html(options: &serde_json::Value, events: &[Stamped], verdicts: &[Verdict]) -> String {
    let end_ms = events.last().map_or(1000, |e| e.t_ms.max(1000));
    let secs = (end_ms / 1000 + 1) as usize;
    let width = 1100.0;
    let left = 60.0;
    let x = |t_ms: u64| left + (t_ms as f64 / end_ms as f64) * (width - left - 10.0);
    let passed = verdicts.iter().filter(|v| v.passed).count();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tern chaos run</title><style>\
         body{{font-family:sans-serif;margin:20px;max-width:1150px}} table{{border-collapse:collapse}} \
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}} .ok{{color:#070}} .bad{{color:#b00;font-weight:bold}} \
         code{{font-size:90%}}</style></head><body><h1>Tern chaos run: {passed} passed, {} failed</h1><p><code>{}</code></p>",
        verdicts.len() - passed,
        esc(&options.to_string())
    );
    h.push_str(
        "<h2>Verdicts</h2><table><tr><th>check</th><th>result</th><th>what was checked</th></tr>",
    );
    for v in verdicts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            v.check,
            if v.passed { "ok" } else { "bad" },
            if v.passed {
                "passed".to_owned()
            } else {
                format!("failed ({})", v.violations)
            },
            esc(&v.summary)
        );
    }
    h.push_str("</table>");

    // Timeline: one row per fault kind, node events as ticks.
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        if let Event::Fault { kind, .. } = &e.event {
            let n = rows.len();
            rows.entry(kind.clone()).or_insert(n);
        }
    }
    let row_h = 16.0;
    let tl_h = 30.0 + row_h * (rows.len() as f64 + 1.0);
    let _ = write!(
        h,
        "<h2>Faults</h2><svg width=\"{width}\" height=\"{tl_h}\" style=\"border:1px solid #ddd\">"
    );
    for s in (0..secs).step_by((secs / 20).max(1)) {
        let xs = x(s as u64 * 1000);
        let _ = write!(h, "<line x1=\"{xs}\" y1=\"0\" x2=\"{xs}\" y2=\"{tl_h}\" stroke=\"#eee\"/><text x=\"{xs}\" y=\"{}\" font-size=\"9\">{s}s</text>", tl_h - 2.0);
    }
    for e in events {
        match &e.event {
            Event::Fault {
                kind,
                detail,
                end_ms,
                ..
            } => {
                let y = 10.0 + row_h * rows[kind] as f64;
                let x1 = x(e.t_ms);
                let x2 = x(end_ms.unwrap_or(end_ms_default(events)));
                let _ = write!(
                    h,
                    "<rect x=\"{x1:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"#e8833a\"><title>{} {}</title></rect><text x=\"2\" y=\"{}\" font-size=\"10\">{}</text>",
                    (x2 - x1).max(2.0),
                    row_h - 4.0,
                    esc(kind),
                    esc(detail),
                    y + 10.0,
                    esc(kind)
                );
            }
            Event::Node { node, what } => {
                let color = match what {
                    NodeChange::Killed | NodeChange::Removed => "#b00",
                    NodeChange::Exited {
                        expected: false, ..
                    }
                    | NodeChange::Panicked { .. } => "#f0f",
                    NodeChange::Paused => "#c90",
                    _ => "#080",
                };
                let xs = x(e.t_ms);
                let y = 10.0 + row_h * rows.len() as f64;
                let _ = write!(h, "<line x1=\"{xs:.1}\" y1=\"{y}\" x2=\"{xs:.1}\" y2=\"{}\" stroke=\"{color}\"><title>node {node}: {}</title></line>", y + row_h, esc(&format!("{what:?}")));
            }
            _ => {}
        }
    }
    let _ = write!(
        h,
        "<text x=\"2\" y=\"{}\" font-size=\"10\">nodes</text></svg>",
        20.0 + row_h * rows.len() as f64
    );

    // Throughput and latency.
    let data = series(events, secs);
    let chart = |title: &str, lines: Vec<(Vec<f64>, &str, &str)>| {
        let hgt = 160.0;
        let max = lines
            .iter()
            .flat_map(|l| l.0.iter().copied())
            .fold(1.0, f64::max);
        let mut s = format!(
            "<h2>{title}</h2><svg width=\"{width}\" height=\"{}\" style=\"border:1px solid #ddd\">",
            hgt + 20.0
        );
        let _ = write!(s, "<text x=\"2\" y=\"12\" font-size=\"10\">{max:.0}</text><text x=\"2\" y=\"{hgt}\" font-size=\"10\">0</text>");
        for (i, (vals, color, name)) in lines.iter().enumerate() {
            let pts: Vec<(f64, f64)> = vals
                .iter()
                .enumerate()
                .map(|(i, v)| (x(i as u64 * 1000 + 500), hgt - v / max * (hgt - 10.0)))
                .collect();
            s.push_str(&polyline(&pts, color));
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{color}\">{name}</text>",
                left + 10.0 + 170.0 * i as f64,
                hgt + 15.0
            );
        }
        s.push_str("</svg>");
        s
    };
    h.push_str(&chart(
        "Throughput (per second)",
        vec![
            (
                data.iter().map(|d| d.0 as f64).collect(),
                "#1f77b4",
                "acknowledged publishes",
            ),
            (
                data.iter().map(|d| d.1 as f64).collect(),
                "#2ca02c",
                "deliveries",
            ),
        ],
    ));
    h.push_str(&chart(
        "Publish latency (ms, PUBLISH to PUBACK / PUBREC)",
        vec![
            (
                data.iter().map(|d| d.2 as f64).collect(),
                "#1f77b4",
                "median",
            ),
            (
                data.iter().map(|d| d.3 as f64).collect(),
                "#d62728",
                "maximum",
            ),
        ],
    ));

    h.push_str("<h2>Faults in order</h2><table><tr><th>start</th><th>end</th><th>fault</th><th>nodes</th><th>detail</th></tr>");
    for e in events {
        if let Event::Fault {
            kind,
            detail,
            nodes,
            end_ms,
        } = &e.event
        {
            let _ = write!(
                h,
                "<tr><td>{:.1} s</td><td>{}</td><td>{}</td><td>{nodes:?}</td><td>{}</td></tr>",
                e.t_ms as f64 / 1e3,
                end_ms.map_or("-".into(), |m| format!("{:.1} s", m as f64 / 1e3)),
                esc(kind),
                esc(detail)
            );
        }
        if let Event::Recovered { after, ms } = &e.event {
            let _ = write!(
                h,
                "<tr><td>{:.1} s</td><td></td><td colspan=\"3\">recovered after {}: {}</td></tr>",
                e.t_ms as f64 / 1e3,
                esc(after),
                ms.map_or("not within the bound".into(), |m| format!("{m} ms"))
            );
        }
    }
    h.push_str("</table><h2>Violations</h2>");
    let mut any = false;
    for v in verdicts.iter().filter(|v| !v.passed) {
        any = true;
        let _ = write!(
            h,
            "<h3>{} ({} violations, first {} listed)</h3><ul>",
            v.check,
            v.violations,
            v.listed.len()
        );
        for l in &v.listed {
            let _ = write!(
                h,
                "<li>{:.1} s: {}<br><small>faults around: {}</small></li>",
                l.t_ms as f64 / 1e3,
                esc(&l.what),
                esc(&l.faults.join("; "))
            );
        }
        h.push_str("</ul>");
    }
    if !any {
        h.push_str("<p>None.</p>");
    }
    h.push_str("</body></html>\n");
    h
}

fn end_ms_default(events: &[Stamped]) -> u64 {
    events.last().map_or(0, |e| e.t_ms)
}
