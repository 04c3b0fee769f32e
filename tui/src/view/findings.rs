//! View 3: the findings, most severe first; Enter opens the selected one's evidence (what it
//! measured, where, what to do), and again shows it on the timeline.

use super::{dim, duration};
use crate::app::App;
use pinch_analyzer::{Finding, Level};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let findings = &app.dash.findings;
    if findings.is_empty() {
        let text = "No findings: nothing in this run crossed a detector's threshold.";
        frame.render_widget(
            Paragraph::new(text).block(Block::bordered().title(" findings ")),
            area,
        );
        return;
    }
    let (list_area, evidence_area) = if app.evidence {
        let [l, e] = Layout::vertical([Constraint::Percentage(40), Constraint::Min(0)]).areas(area);
        (l, Some(e))
    } else {
        (area, None)
    };
    let items: Vec<ListItem> = findings.iter().map(item).collect();
    let mut state = ListState::default().with_selected(Some(app.finding));
    let list = List::new(items)
        .block(Block::bordered().title(format!(" findings ({}) ", findings.len())))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(list, list_area, &mut state);
    if let (Some(area), Some(finding)) = (evidence_area, findings.get(app.finding)) {
        render_evidence(finding, frame, area);
    }
}

fn level_style(level: Level) -> Style {
    match level {
        Level::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Level::Warning => Style::new().fg(Color::Yellow),
        Level::Info => Style::new().fg(Color::Cyan),
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "critical",
        Level::Warning => "warning",
        Level::Info => "info",
    }
}

fn item(finding: &Finding) -> ListItem<'static> {
    ListItem::new(Line::from(vec![
        Span::styled(
            format!("{:<8}", level_name(finding.level)),
            level_style(finding.level),
        ),
        Span::raw(format!(" {:>5.1}%  ", finding.severity * 100.0)),
        Span::raw(finding.summary.clone()),
    ]))
}

fn render_evidence(finding: &Finding, frame: &mut Frame, area: Rect) {
    let loc = &finding.location;
    let mut lines = vec![
        Line::styled(finding.summary.clone(), level_style(finding.level)),
        Line::raw(format!("where: {}", where_text(finding))),
    ];
    if !loc.ops.is_empty() {
        lines.push(Line::raw(format!("ops: {}", loc.ops.join(", "))));
    }
    lines.push(Line::raw(when_text(finding)));
    let evidence: Vec<String> = finding
        .evidence
        .iter()
        .map(|(name, value)| format!("{name}={}", trim_number(*value)))
        .collect();
    lines.push(Line::raw(format!("evidence: {}", evidence.join(", "))));
    lines.push(Line::raw(format!("suggestion: {}", finding.suggestion)));
    lines.push(Line::styled(
        "Enter or t: show it on the timeline; Esc: close",
        dim(),
    ));
    let block = Block::bordered().title(" evidence ");
    frame.render_widget(
        Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
        area,
    );
}

/// Where in time the finding shows: its stretches' count, extent and total.
fn when_text(finding: &Finding) -> String {
    let stretches = &finding.stretches;
    let (Some(first), Some(last)) = (stretches.first(), stretches.last()) else {
        return "when: the whole run".to_string();
    };
    let total_ns: u64 = stretches.iter().map(|s| s.duration_ns).sum();
    let at = |ns: i64| format!("{:+.6} s", ns as f64 / 1e9);
    format!(
        "when: {} stretch{} from {} to {}, {} in all (f on the timeline walks them)",
        stretches.len(),
        if stretches.len() == 1 { "" } else { "es" },
        at(first.start_ns),
        at(last.start_ns),
        duration(total_ns)
    )
}

fn where_text(finding: &Finding) -> String {
    let loc = &finding.location;
    let mut parts = Vec::new();
    let list = |name: &str, items: &[u32]| {
        let items: Vec<String> = items.iter().map(u32::to_string).collect();
        format!("{name} {}", items.join(", "))
    };
    if !loc.nodes.is_empty() {
        parts.push(list("nodes", &loc.nodes));
    }
    if !loc.ranks.is_empty() {
        parts.push(list("ranks", &loc.ranks));
    }
    if !loc.links.is_empty() {
        parts.push(format!("links {}", loc.links.join(", ")));
    }
    if !loc.experts.is_empty() {
        parts.push(list("experts", &loc.experts));
    }
    if parts.is_empty() {
        "the whole run".to_string()
    } else {
        parts.join("; ")
    }
}

/// A number without a float's noise: integers plain, others to three decimals.
fn trim_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use crate::app::{App, View};
    use crate::testkit::{dashboard, screen};

    #[test]
    fn findings_list() {
        let mut app = App::new(dashboard());
        app.view = View::Findings;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }

    #[test]
    fn findings_evidence_open() {
        let mut app = App::new(dashboard());
        app.view = View::Findings;
        app.finding = 1;
        app.evidence = true;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }
}
