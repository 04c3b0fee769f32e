//! View 1: a row per node (CPU and GPU gauges, memory, NIC against the link, sparklines of the
//! last minute), then a row per rank (its share of wall time by category).

use super::{bytes, dim, pct};
use crate::app::App;
use crate::state::{NodeRow, RankRow};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table};

/// Lines per node: name, CPU gauge and sparkline, GPU gauge, NIC gauge and sparkline.
const NODE_LINES: u16 = 4;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let dash = &app.dash;
    let node_height = (dash.nodes.len() as u16 * NODE_LINES + 2).min(area.height / 2);
    let [nodes, ranks] =
        Layout::vertical([Constraint::Length(node_height), Constraint::Min(0)]).areas(area);
    let block =
        Block::bordered().title(" nodes (lines: the last minute, or all of a shorter run) ");
    let inner = block.inner(nodes);
    frame.render_widget(block, nodes);
    let rows =
        Layout::vertical(vec![Constraint::Length(NODE_LINES); dash.nodes.len()]).split(inner);
    for (node, &row) in dash.nodes.iter().zip(rows.iter()) {
        render_node(node, frame, row);
    }
    render_ranks(&dash.ranks, frame, ranks);
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

fn render_ranks(ranks: &[RankRow], frame: &mut Frame, area: Rect) {
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
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" ranks: share of wall time "));
    frame.render_widget(table, area);
}

#[cfg(test)]
mod tests {
    use crate::app::App;
    use crate::testkit::{dashboard, screen};

    #[test]
    fn overview() {
        insta::assert_snapshot!(screen(&App::new(dashboard()), 100, 30));
    }
}
