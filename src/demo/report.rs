//! The summary the demo prints after its load phases.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use palisade::metrics::snapshot::Snapshot;

use super::load::Tally;
use super::server::{ServerCounts, Side};

/// One load phase: what the client saw and what the server counted.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseReport {
    /// The routes the phase called.
    pub side: Side,
    /// What the client saw.
    pub tally: Tally,
    /// What the server counted during the phase.
    pub server: ServerCounts,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency with three significant digits at most: `0.42 ms`, `27.4 ms`,
/// `301 ms`, `1.20 s`.
pub fn latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A configured duration as one would say it: `250 ms`, `1.5 s`, `3 s`.
pub fn setting(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

struct Table {
    headers: Vec<String>,
    /// Columns whose cells are text, aligned left; numbers align right.
    text_columns: Vec<bool>,
    rows: Vec<(String, Vec<String>)>,
}

impl Table {
    fn row(&mut self, label: impl Into<String>, cells: Vec<String>) {
        self.rows.push((label.into(), cells));
    }

    fn render(&self) -> String {
        let label_width = self
            .rows
            .iter()
            .map(|(label, _)| label.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|(_, cells)| cells.get(i))
                    .chain(std::iter::once(&self.headers[i]))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let mut line = |label: &str, cells: &[String]| {
            let mut text = format!("  {label:<label_width$}");
            for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                if self.text_columns.get(i).copied().unwrap_or(false) {
                    let _ = write!(text, "   {cell:<width$}");
                } else {
                    let _ = write!(text, "   {cell:>width$}");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line("", &self.headers);
        for (label, cells) in &self.rows {
            line(label, cells);
        }
        out
    }
}

/// The side-by-side table of `phases`, for workers that give up after
/// `patience`.
pub fn render(phases: &[PhaseReport], patience: Duration) -> String {
    let mut table = Table {
        headers: phases.iter().map(|p| p.side.label().to_owned()).collect(),
        text_columns: Vec::new(),
        rows: Vec::new(),
    };
    let each = |f: &dyn Fn(&PhaseReport) -> String| phases.iter().map(f).collect::<Vec<_>>();
    let count = |f: &dyn Fn(&PhaseReport) -> u64| each(&|p| thousands(f(p)));

    table.row("requests", count(&|p| p.tally.requests));
    table.row(
        "success rate (2xx answers)",
        each(&|p| {
            p.tally
                .success_rate()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1} %", r * 100.0))
        }),
    );
    table.row("  full answers", count(&|p| p.tally.full));
    table.row(
        "  degraded answers (fallback)",
        count(&|p| p.tally.degraded),
    );
    for (label, q) in [("latency p50", 0.50), ("latency p99", 0.99)] {
        table.row(
            label,
            each(&|p| {
                p.tally
                    .percentile(q)
                    .map_or_else(|| "-".to_owned(), latency)
            }),
        );
    }
    table.row("rejected by palisade", count(&|p| p.tally.rejections()));
    let reasons: BTreeSet<&String> = phases
        .iter()
        .flat_map(|p| p.tally.rejected.keys())
        .collect();
    for reason in reasons {
        table.row(
            format!("  {}", reason.replace('_', " ")),
            count(&|p| p.tally.rejected.get(reason).copied().unwrap_or(0)),
        );
    }
    table.row("failed", count(&|p| p.tally.failures()));
    table.row(
        "  500 for a caught panic",
        count(&|p| p.tally.panic_answers),
    );
    table.row("  other error answers", count(&|p| p.tally.error_statuses));
    table.row(
        "  connection broken (panic not caught)",
        count(&|p| p.tally.broken),
    );
    table.row(
        format!("  no answer within {}", setting(patience)),
        count(&|p| p.tally.gave_up),
    );
    table.row(
        "panics contained",
        each(&|p| {
            let injected = p.server.panics_injected(p.side);
            let caught = match p.side {
                Side::Bare => 0,
                Side::Protected => p.server.panics_caught,
            };
            format!("{} of {}", thousands(caught), thousands(injected))
        }),
    );
    table.row(
        "calls to the slow dependency",
        count(&|p| p.server.dependency_calls),
    );
    table.render()
}

/// One line per policy of `snapshot`: its breaker, what it rejected, cut
/// off, caught and answered in place of the service.
pub fn render_policies(snapshot: &Snapshot) -> String {
    let mut table = Table {
        headers: [
            "breaker",
            "rejected",
            "timeouts",
            "panics caught",
            "fallbacks",
        ]
        .map(str::to_owned)
        .to_vec(),
        text_columns: vec![true, true],
        rows: Vec::new(),
    };
    for p in &snapshot.policies {
        let breaker = p.breaker.as_ref().map_or_else(
            || "-".to_owned(),
            |b| {
                let state = b.state.replace('_', " ");
                match b.transitions {
                    0 => state,
                    1 => format!("{state} (1 transition)"),
                    n => format!("{state} ({n} transitions)"),
                }
            },
        );
        let rejected = if p.rejections.by_reason.is_empty() {
            "0".to_owned()
        } else {
            p.rejections
                .by_reason
                .iter()
                .map(|r| format!("{} {}", r.reason.replace('_', " "), thousands(r.total)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.row(
            p.name.clone(),
            vec![
                breaker,
                rejected,
                thousands(p.timeouts.total),
                thousands(p.panics.total),
                thousands(p.fallbacks.total),
            ],
        );
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::load::Answer;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(latency(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(latency(Duration::from_micros(27_440)), "27.4 ms");
        assert_eq!(latency(Duration::from_micros(300_600)), "301 ms");
        assert_eq!(latency(Duration::from_millis(1200)), "1.20 s");
        assert_eq!(setting(Duration::from_millis(250)), "250 ms");
        assert_eq!(setting(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(setting(Duration::from_secs(3)), "3 s");
    }

    #[test]
    fn the_table_puts_phases_side_by_side() {
        let mut bare = Tally::default();
        bare.record(Answer::Full, Duration::from_millis(3));
        bare.record(Answer::Broken, Duration::from_millis(2));
        let mut protected = Tally::default();
        protected.record(Answer::Degraded, Duration::from_millis(4));
        protected.record(
            Answer::Rejected("timed_out".to_owned()),
            Duration::from_millis(250),
        );
        let server = ServerCounts {
            bare_panics: 1,
            protected_panics: 2,
            panics_caught: 2,
            ..ServerCounts::default()
        };
        let text = render(
            &[
                PhaseReport {
                    side: Side::Bare,
                    tally: bare,
                    server: server.clone(),
                },
                PhaseReport {
                    side: Side::Protected,
                    tally: protected,
                    server,
                },
            ],
            Duration::from_secs(1),
        );
        let line = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("without palisade   with palisade")
        );
        assert_eq!(
            line("success rate"),
            "success rate (2xx answers) 50.0 % 50.0 %"
        );
        assert_eq!(line("degraded answers"), "degraded answers (fallback) 0 1");
        assert_eq!(line("timed out"), "timed out 0 1");
        assert_eq!(
            line("connection broken"),
            "connection broken (panic not caught) 1 0"
        );
        assert_eq!(line("panics contained"), "panics contained 0 of 1 2 of 2");
        assert_eq!(line("latency p99"), "latency p99 3.00 ms 250 ms");
        assert_eq!(line("no answer within"), "no answer within 1 s 0 0");
    }
}
