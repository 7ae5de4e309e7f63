//! The HTML page, rendered on the server with the current snapshot so it is
//! useful before (or without) its script, which then refreshes it in place.
//!
//! The markup here and the script's `policyRow` build the same elements
//! with the same classes and data attributes.

use std::fmt::Write as _;

use crate::snapshot::{PolicySnapshot, Recent, Snapshot};

const TEMPLATE: &str = include_str!("page.html");

/// Escapes text for HTML content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn human(label: &str) -> String {
    label.replace('_', " ")
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).floor() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// `HH:MM:SS UTC` of a Unix time in milliseconds.
fn utc_clock(unix_ms: u64) -> String {
    let day_seconds = (unix_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day_seconds / 3600,
        (day_seconds % 3600) / 60,
        day_seconds % 60
    )
}

fn recent(r: &Recent) -> String {
    if r.recent > 0 {
        format!("{} ({} recent)", r.total, r.recent)
    } else {
        r.total.to_string()
    }
}

fn hot(condition: bool) -> &'static str {
    if condition { " hot" } else { "" }
}

fn policy_row(out: &mut String, p: &PolicySnapshot) {
    let name = escape(&p.name);
    let state = p.breaker.as_ref().map_or("none", |b| b.state);
    let _ = write!(
        out,
        r#"<tr class="policy" data-policy="{name}" data-health="{health}" data-state="{state}">"#,
        health = p.health.as_str(),
    );
    let layers = p
        .layers
        .iter()
        .map(|l| human(l))
        .collect::<Vec<_>>()
        .join(" \u{b7} ");
    let _ = write!(
        out,
        r#"<td class="policy-name">{name}<span class="sub">{layers}</span></td>"#
    );

    out.push_str(r#"<td class="breaker">"#);
    match &p.breaker {
        Some(b) => {
            let _ = write!(
                out,
                r#"<span class="breaker-state" data-state="{state}">{}</span>"#,
                human(b.state)
            );
            if let Some(shadow) = b.shadow_state {
                let _ = write!(
                    out,
                    r#"<span class="since">would be {}</span>"#,
                    human(shadow)
                );
            }
            if let Some(t) = &b.last_transition {
                let _ = write!(
                    out,
                    r#"<span class="since">for {} ({})</span>"#,
                    duration(t.seconds_ago),
                    human(t.reason)
                );
            }
        }
        None => out.push_str(r#"<span class="breaker-state" data-state="none">no breaker</span>"#),
    }
    out.push_str("</td>");

    let failure = p
        .breaker
        .as_ref()
        .and_then(|b| b.failure_rate)
        .map_or_else(|| "\u{2013}".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let _ = write!(out, r#"<td class="num failure-rate">{failure}</td>"#);

    out.push_str(r#"<td class="in-flight">"#);
    match &p.bulkhead {
        Some(b) => {
            let limit = b.limit.map_or_else(|| "?".to_owned(), |l| l.to_string());
            let adaptive = if b.adaptive { " (adaptive)" } else { "" };
            let _ = write!(out, "{} / {limit}{adaptive}", b.in_flight);
            if let Some(limit) = b.limit.filter(|l| *l > 0) {
                let share = (b.in_flight.max(0) as f64 / limit as f64).clamp(0.0, 1.0);
                let _ = write!(
                    out,
                    r#"<span class="bar" data-full="{}"><span style="width:{:.0}%"></span></span>"#,
                    share >= 1.0,
                    share * 100.0
                );
            }
        }
        None => out.push('\u{2013}'),
    }
    out.push_str("</td>");

    let _ = write!(
        out,
        r#"<td class="num rejections-rate{}">{:.1}/s"#,
        hot(p.rejections.recent > 0),
        p.rejections.per_second
    );
    if !p.rejections.by_reason.is_empty() {
        let reasons = p
            .rejections
            .by_reason
            .iter()
            .map(|r| format!("{} {}", human(r.reason), r.total))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(out, r#"<span class="sub">{reasons}</span>"#);
    }
    out.push_str("</td>");
    out.push_str("<td class=\"num requests-rate\">\u{2013}</td>");
    let _ = write!(
        out,
        r#"<td class="num panics{}">{}</td><td class="num timeouts{}">{}</td><td class="num fallbacks">{}</td>"#,
        hot(p.panics.recent > 0),
        recent(&p.panics),
        hot(p.timeouts.recent > 0),
        recent(&p.timeouts),
        recent(&Recent {
            total: p.fallbacks.total,
            recent: p.fallbacks.recent,
            per_second: p.fallbacks.per_second,
        }),
    );
    let concerns = if p.concerns.is_empty() {
        "ok".to_owned()
    } else {
        escape(&p.concerns.join("; "))
    };
    let _ = write!(out, r#"<td class="concerns">{concerns}</td></tr>"#);
}

fn empty_row(out: &mut String, columns: usize, text: &str) {
    let _ = write!(
        out,
        r#"<tr class="empty"><td colspan="{columns}">{text}</td></tr>"#
    );
}

/// The page for `snapshot`.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let mut summary = String::new();
    for (health, n) in [
        ("critical", snapshot.summary.critical),
        ("degraded", snapshot.summary.degraded),
        ("ok", snapshot.summary.ok),
    ] {
        let _ = write!(
            summary,
            r#"<span class="count" id="count-{health}" data-health="{health}" data-zero="{}">{n} {health}</span>"#,
            n == 0
        );
    }

    let mut policies = String::new();
    for p in &snapshot.policies {
        policy_row(&mut policies, p);
    }
    if snapshot.policies.is_empty() {
        empty_row(&mut policies, 10, "No policy has reported yet.");
    }

    let mut groups = String::new();
    for g in &snapshot.task_groups {
        let name = escape(&g.name);
        let ended = g
            .ended
            .iter()
            .map(|e| format!("{} {}", human(e.end), e.total))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            groups,
            r#"<tr class="task-group" data-group="{name}"><td class="group-name">{name}</td><td class="num live">{}</td><td class="num started">{}</td><td class="num panics{}">{}</td><td class="num restarts">{}</td><td class="ended">{}</td></tr>"#,
            g.live,
            g.started,
            hot(g.panics > 0),
            g.panics,
            g.restarts,
            if ended.is_empty() {
                "\u{2013}".to_owned()
            } else {
                ended
            },
        );
    }
    if snapshot.task_groups.is_empty() {
        empty_row(&mut groups, 6, "No task group has reported yet.");
    }

    let mut queues = String::new();
    for q in &snapshot.offload_queues {
        let name = escape(&q.name);
        let dropped = q
            .dropped
            .iter()
            .map(|d| format!("{} {}", human(d.reason), d.total))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            queues,
            r#"<tr class="offload-queue" data-queue="{name}"><td class="queue-name">{name}</td><td class="num delivered">{}</td><td class="num dropped{}">{}</td><td class="dropped-by-reason">{}</td><td class="num failed-attempts">{}</td><td class="num panicked-attempts{}">{}</td></tr>"#,
            q.delivered,
            hot(q.dropped_total > 0),
            q.dropped_total,
            if dropped.is_empty() {
                "\u{2013}".to_owned()
            } else {
                dropped
            },
            q.failed_attempts,
            hot(q.panicked_attempts > 0),
            q.panicked_attempts,
        );
    }
    if snapshot.offload_queues.is_empty() {
        empty_row(&mut queues, 6, "No offload queue has reported yet.");
    }

    let untracked = if snapshot.untracked_events > 0 {
        format!(
            "{} events of untracked names dropped.",
            snapshot.untracked_events
        )
    } else {
        String::new()
    };

    let updated_at = utc_clock(snapshot.taken_at_unix_ms);
    let window = snapshot.window_seconds.to_string();
    fill(TEMPLATE, |key| match key {
        "summary" => Some(&summary),
        "updated_at" => Some(&updated_at),
        "policies" => Some(&policies),
        "groups" => Some(&groups),
        "queues" => Some(&queues),
        "window" => Some(&window),
        "untracked" => Some(&untracked),
        _ => None,
    })
}

/// Replaces each `{{key}}` of `template` in one pass, so a value that
/// contains a placeholder (a policy may be named anything) stays as it is.
fn fill<'a>(template: &str, value: impl Fn(&str) -> Option<&'a String>) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        match value(&after[..end]) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain-name_1"), "plain-name_1");
    }

    #[test]
    fn fills_placeholders_once() {
        let a = "<{{b}}>".to_owned();
        let b = "B".to_owned();
        let filled = fill("x {{a}} y {{b}} z {{c}}", |k| match k {
            "a" => Some(&a),
            "b" => Some(&b),
            _ => None,
        });
        assert_eq!(filled, "x <{{b}}> y B z {{c}}");
    }

    #[test]
    fn formats_durations_and_clock() {
        assert_eq!(duration(5.9), "5 s");
        assert_eq!(duration(125.0), "2 min 5 s");
        assert_eq!(duration(7260.0), "2 h 1 min");
        assert_eq!(
            utc_clock(((3 * 3600 + 4 * 60 + 5) * 1000) as u64),
            "03:04:05 UTC"
        );
    }
}
