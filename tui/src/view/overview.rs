//! View 1: a row per node (CPU and GPU gauges, memory, NIC against the link, sparklines of the
//! last minute), then a row per rank (its share of wall time by category).

use super::{bytes, dim, pct};
use crate::app::App;
use crate::state::{NodeRow, RankRow};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table, TableState};

/// Lines per node: name, CPU gauge and sparkline, GPU gauge, NIC gauge and sparkline.
const NODE_LINES: u16 = 4;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let dash = &app.dash;
    let node_height = (dash.nodes.len() as u16 * NODE_LINES + 2).min(area.height / 2);
    let [nodes, ranks] =
        Layout::vertical([Constraint::Length(node_height), Constraint::Min(0)]).areas(area);
    let inner_height = node_height.saturating_sub(2);
    let fits = usize::from(inner_height / NODE_LINES).max(1);
    let first = first_node(app, fits);
    let shown = fits.min(dash.nodes.len().saturating_sub(first));
    let title = if shown < dash.nodes.len() {
        format!(
            " nodes {}-{} of {} (lines: the last minute, or all of a shorter run) ",
            dash.nodes[first].node,
            dash.nodes[first + shown - 1].node,
            dash.nodes.len()
        )
    } else {
        " nodes (lines: the last minute, or all of a shorter run) ".to_string()
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(nodes);
    frame.render_widget(block, nodes);
    let rows = Layout::vertical(vec![Constraint::Length(NODE_LINES); shown]).split(inner);
    for (node, &row) in dash.nodes.iter().skip(first).zip(rows.iter()) {
        render_node(node, frame, row);
    }
    render_ranks(app, frame, ranks);
}

/// The first node shown: the selected rank's node stays in view, `fits` nodes at a time.
fn first_node(app: &App, fits: usize) -> usize {
    let dash = &app.dash;
    let node = dash.ranks.get(app.overview_rank).map(|r| r.node);
    let at = dash
        .nodes
        .iter()
        .position(|n| Some(n.node) == node)
        .unwrap_or(0);
    (at + 1).saturating_sub(fits)
}

fn render_node(node: &NodeRow, frame: &mut Frame, area: Rect) {
    let [name, cpu, gpu, nic] = Layout::vertical([Constraint::Length(1); 4]).areas(area);
    let memory = node.memory_available_bytes.map_or_else(
        || "memory: -".to_string(),
        |b| format!("memory available {}", bytes(b)),
    );
    frame.render_widget(
        Paragraph::new(format!("node {} ({})  {memory}", node.node, node.host)),
        name,
    );
    gauge_row(
        frame,
        cpu,
        "CPU",
        node.cpu_pct.map(|p| (p / 100.0, pct(Some(p)))),
        &node.cpu_history,
    );
    gauge_row(
        frame,
        gpu,
        "GPU",
        node.gpu_pct.map(|p| (p / 100.0, pct(Some(p)))),
        &[],
    );
    let nic_ratio = node
        .nic_bytes_per_s
        .zip(node.link_bytes_per_s)
        .filter(|&(_, link)| link > 0.0)
        .map(|(rate, link)| {
            let label = format!("{}/s of {}/s", bytes(rate), bytes(link));
            (rate / link, label)
        });
    let nic_ratio = nic_ratio.or(node
        .nic_bytes_per_s
        .map(|r| (0.0, format!("{}/s, link rate unknown", bytes(r)))));
    gauge_row(frame, nic, "NIC", nic_ratio, &node.nic_history);
}

/// A label, a gauge (or "-" where the value is missing) and the last minute's sparkline.
fn gauge_row(
    frame: &mut Frame,
    area: Rect,
    label: &str,
    value: Option<(f64, String)>,
    history: &[u64],
) {
    let [name, gauge, spark] = Layout::horizontal([
        Constraint::Length(5),
        Constraint::Percentage(55),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(label.to_string()), name);
    match value {
        Some((ratio, text)) => frame.render_widget(
            Gauge::default()
                .ratio(ratio.clamp(0.0, 1.0))
                .label(text)
                .gauge_style(Style::new().fg(gauge_color(ratio))),
            gauge,
        ),
        None => frame.render_widget(Paragraph::new("- (not measured)").style(dim()), gauge),
    }
    if !history.is_empty() {
        // The latest points, where the line is narrower than the history.
        let shown = &history[history.len().saturating_sub(usize::from(spark.width))..];
        let line = Sparkline::default()
            .data(shown)
            .style(Style::new().fg(Color::Cyan));
        frame.render_widget(line, spark);
    }
}

fn gauge_color(ratio: f64) -> Color {
    match ratio {
        r if r >= 0.9 => Color::Red,
        r if r >= 0.6 => Color::Yellow,
        _ => Color::Green,
    }
}

fn render_ranks(app: &App, frame: &mut Frame, area: Rect) {
    let ranks: &[RankRow] = &app.dash.ranks;
    let header = Row::new([
        "rank", "node", "compute", "comm", "memory", "host", "wait", "idle", "dropped",
    ])
    .style(Style::new().fg(Color::Cyan));
    let rows = ranks.iter().map(|r| {
        Row::new(vec![
            Cell::from(r.rank.to_string()),
            Cell::from(r.node.to_string()),
            Cell::from(pct(r.compute_pct)),
            Cell::from(pct(r.communication_pct)),
            Cell::from(pct(r.memory_pct)),
            Cell::from(pct(r.host_pct)),
            Cell::from(pct(r.wait_pct)),
            Cell::from(pct(r.idle_pct)),
            Cell::from(Line::from(
                r.dropped_spans.map_or("-".to_string(), |d| d.to_string()),
            )),
        ])
    });
    let widths = [
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
    ];
    let title = if ranks.len() > usize::from(area.height.saturating_sub(3)) {
        format!(
            " ranks: share of wall time ({} of {}; Enter: its timeline) ",
            app.overview_rank + 1,
            ranks.len()
        )
    } else {
        " ranks: share of wall time (Enter: its timeline) ".to_string()
    };
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(app.overview_rank));
    frame.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use crate::app::App;
    use crate::testkit::{dashboard, screen};

    #[test]
    fn overview() {
        insta::assert_snapshot!(screen(&App::new(dashboard()), 100, 30));
    }

    #[test]
    fn a_rank_past_the_screen_brings_itself_and_its_node_into_view() {
        let mut dash = dashboard();
        let (node, rank) = (dash.nodes[0].clone(), dash.ranks[0].clone());
        dash.nodes = (0..8)
            .map(|n| crate::state::NodeRow {
                node: n,
                host: format!("host-{n}"),
                ..node.clone()
            })
            .collect();
        dash.ranks = (0..64)
            .map(|r| crate::state::RankRow {
                rank: r,
                node: r / 8,
                ..rank.clone()
            })
            .collect();
        let mut app = App::new(dash);
        app.overview_rank = 45;
        let text = screen(&app, 100, 30);
        assert!(text.contains("nodes 4-5 of 8"), "{text}");
        assert!(text.contains("node 5 (host-5)"), "{text}");
        assert!(!text.contains("node 0 (host-0)"), "{text}");
        assert!(text.contains("46 of 64"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("│45 "))
            .unwrap_or_default();
        assert!(row.contains("5"), "rank 45's row shows:\n{text}");
    }
}
