//! View 5: the rank×rank matrix of what each rank sent each other (bytes, or the achieved
//! bandwidth with `b`) as a heatmap, and each collective's bus bandwidth.

use super::{bytes, dim, duration};
use crate::app::{App, CommMetric};
use crate::state::{Comm, PairCell};
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Cell, Row, Table, Widget};

/// Columns of one matrix cell.
const CELL_WIDTH: u16 = 9;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let comm = &app.dash.comm;
    let matrix_height = (comm.ranks.len() as u16 + 3).min(area.height / 2).max(4);
    let [matrix, table] =
        Layout::vertical([Constraint::Length(matrix_height), Constraint::Min(0)]).areas(area);
    let title = match app.comm_metric {
        CommMetric::Bytes => " bytes sent, row rank to column rank (b: bandwidth) ",
        CommMetric::Bandwidth => " achieved GB/s, row rank to column rank (b: bytes) ",
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(matrix);
    frame.render_widget(block, matrix);
    render_matrix(comm, app.comm_metric, frame.buffer_mut(), inner);
    render_collectives(comm, frame, table);
}

fn value(cell: &PairCell, metric: CommMetric) -> Option<f64> {
    match metric {
        CommMetric::Bytes => Some(cell.bytes as f64),
        CommMetric::Bandwidth => cell.gbps,
    }
}

fn render_matrix(comm: &Comm, metric: CommMetric, buf: &mut Buffer, area: Rect) {
    if comm.ranks.is_empty() {
        buf.set_string(area.x, area.y, "no traffic between ranks", dim());
        return;
    }
    let max = comm
        .pairs
        .values()
        .filter_map(|c| value(c, metric))
        .fold(0.0, f64::max);
    let header = Style::new().fg(Color::Cyan);
    buf.set_string(area.x, area.y, "from\\to", header);
    for (j, dst) in comm.ranks.iter().enumerate() {
        let x = area.x + 8 + j as u16 * CELL_WIDTH;
        if x + CELL_WIDTH <= area.x + area.width {
            buf.set_string(x, area.y, format!("{dst:>8}"), header);
        }
    }
    for (i, src) in comm.ranks.iter().enumerate() {
        let y = area.y + 1 + i as u16;
        if y >= area.y + area.height {
            break;
        }
        buf.set_string(area.x, y, format!("{src:>7}"), header);
        for (j, dst) in comm.ranks.iter().enumerate() {
            let x = area.x + 8 + j as u16 * CELL_WIDTH;
            if x + CELL_WIDTH > area.x + area.width {
                break;
            }
            let cell = comm.pairs.get(&(*src, *dst));
            let v = cell.and_then(|c| value(c, metric));
            let text = match (v, metric) {
                (None, _) => "-".to_string(),
                (Some(b), CommMetric::Bytes) => bytes(b),
                (Some(g), CommMetric::Bandwidth) => format!("{g:.2}"),
            };
            let style = v.map_or(dim(), |v| heat(v, max));
            buf.set_string(x, y, format!("{text:>8} "), style);
        }
    }
}

/// Hotter colours for larger values, on a black-to-red ramp.
fn heat(value: f64, max: f64) -> Style {
    let share = if max > 0.0 { value / max } else { 0.0 };
    let bg = match share {
        s if s >= 0.75 => Color::Red,
        s if s >= 0.5 => Color::LightRed,
        s if s >= 0.25 => Color::Yellow,
        s if s > 0.0 => Color::Blue,
        _ => Color::Reset,
    };
    Style::new().fg(Color::White).bg(bg)
}

fn render_collectives(comm: &Comm, frame: &mut Frame, area: Rect) {
    let header = Row::new([
        "collective",
        "size",
        "ranks",
        "count",
        "median",
        "p90",
        "busbw GB/s",
    ])
    .style(Style::new().fg(Color::Cyan));
    let rows = comm.collectives.iter().map(|c| {
        Row::new(vec![
            Cell::from(c.kind.name()),
            Cell::from(bytes(c.size_class_bytes as f64)),
            Cell::from(c.participants.to_string()),
            Cell::from(c.count.to_string()),
            Cell::from(duration(c.median_ns)),
            Cell::from(duration(c.p90_ns)),
            Cell::from(c.busbw_gbps.map_or("-".to_string(), |b| format!("{b:.2}"))),
        ])
    });
    let widths = [
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(11),
    ];
    Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" collectives "))
        .render(area, frame.buffer_mut());
}

#[cfg(test)]
mod tests {
    use crate::app::{App, CommMetric, View};
    use crate::testkit::{dashboard, screen};

    #[test]
    fn comm_bytes() {
        let mut app = App::new(dashboard());
        app.view = View::Comm;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }

    #[test]
    fn comm_bandwidth() {
        let mut app = App::new(dashboard());
        app.view = View::Comm;
        app.comm_metric = CommMetric::Bandwidth;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }
}
