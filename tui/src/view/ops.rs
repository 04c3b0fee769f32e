//! View 4: every op over all ranks in a sortable table (time share, achieved FLOP/s and GB/s,
//! roofline class), beside a roofline chart: the roofs and each op at its arithmetic
//! intensity, on log-log axes.

use super::{category_color, duration};
use crate::app::{App, OpColumn};
use crate::state::OpRow;
use pinch_analyzer::{Ceilings, RooflineClass};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{
    Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, TableState,
};
use std::cmp::Ordering;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let [table, chart] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Min(0)]).areas(area);
    let rows = sorted(app);
    render_table(app, &rows, frame, table);
    render_roofline(&rows, app.dash.roofs, frame, chart);
}

/// The ops in the chosen order.
fn sorted(app: &App) -> Vec<&OpRow> {
    let mut rows: Vec<&OpRow> = app.dash.ops.iter().collect();
    let by_option = |a: Option<f64>, b: Option<f64>| a.partial_cmp(&b).unwrap_or(Ordering::Equal);
    rows.sort_by(|a, b| {
        let order = match app.ops_sort {
            OpColumn::Share => a.total_ns.cmp(&b.total_ns),
            OpColumn::Count => a.count.cmp(&b.count),
            OpColumn::Median => a.median_ns.cmp(&b.median_ns),
            OpColumn::Gflops => by_option(a.gflops, b.gflops),
            OpColumn::Gbps => by_option(a.gbps, b.gbps),
            OpColumn::Name => b.name.cmp(&a.name),
        };
        let order = if app.ops_descending {
            order.reverse()
        } else {
            order
        };
        order.then_with(|| a.name.cmp(&b.name))
    });
    rows
}

fn class_name(class: Option<RooflineClass>) -> &'static str {
    match class {
        Some(RooflineClass::ComputeBound) => "compute",
        Some(RooflineClass::MemoryBound) => "memory",
        Some(RooflineClass::LatencyBound) => "latency",
        None => "-",
    }
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

fn render_table(app: &App, rows: &[&OpRow], frame: &mut Frame, area: Rect) {
    let columns = ["op", "count", "share", "median", "GFLOP/s", "GB/s", "bound"];
    let sorted_by = match app.ops_sort {
        OpColumn::Name => 0,
        OpColumn::Count => 1,
        OpColumn::Share => 2,
        OpColumn::Median => 3,
        OpColumn::Gflops => 4,
        OpColumn::Gbps => 5,
    };
    let arrow = if app.ops_descending { "↓" } else { "↑" };
    let header = Row::new(columns.iter().enumerate().map(|(i, &c)| {
        if i == sorted_by {
            Cell::from(format!("{c}{arrow}"))
        } else {
            Cell::from(c)
        }
    }))
    .style(Style::new().fg(Color::Cyan));
    let body = rows.iter().map(|op| {
        Row::new(vec![
            Cell::from(op.name.clone()).style(Style::new().fg(category_color(op.category))),
            Cell::from(op.count.to_string()),
            Cell::from(format!("{:.1}%", op.share_pct)),
            Cell::from(duration(op.median_ns)),
            Cell::from(number(op.gflops)),
            Cell::from(number(op.gbps)),
            Cell::from(class_name(op.class)),
        ])
    });
    let widths = [
        Constraint::Min(14),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let title = format!(" ops, all ranks ({} of {}) ", app.ops_row + 1, rows.len());
    let table = Table::new(body, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(app.ops_row));
    frame.render_stateful_widget(table, area, &mut state);
}

/// The roofs and the ops under them, log10 on both axes.
fn render_roofline(rows: &[&OpRow], roofs: Option<Ceilings>, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(" roofline (log-log) ");
    let points: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|op| Some((op.intensity?.log10(), op.gflops?.log10())))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let Some(roofs) = roofs else {
        let text = "No roofs: the run carries no calibration (`pinch calibrate`).";
        frame.render_widget(Paragraph::new(text).block(block), area);
        return;
    };
    let (x_min, x_max) = bounds(
        points.iter().map(|p| p.0),
        roofs.ridge_flops_per_byte().log10(),
    );
    let roof: Vec<(f64, f64)> = (0..=40)
        .map(|k| {
            let x = x_min + (x_max - x_min) * f64::from(k) / 40.0;
            let gflops = (10f64.powf(x) * roofs.gbps).min(roofs.gflops);
            (x, gflops.log10())
        })
        .collect();
    let y_values = points.iter().map(|p| p.1).chain(roof.iter().map(|p| p.1));
    let (y_min, y_max) = bounds(y_values, roofs.gflops.log10());
    let datasets = vec![
        Dataset::default()
            .name("roof")
            .graph_type(GraphType::Line)
            .marker(Marker::Braille)
            .style(Style::new().fg(Color::DarkGray))
            .data(&roof),
        Dataset::default()
            .name("ops")
            .graph_type(GraphType::Scatter)
            .marker(Marker::Dot)
            .style(Style::new().fg(Color::Yellow))
            .data(&points),
    ];
    let label = |v: f64| Line::raw(format!("{:.3}", 10f64.powf(v)));
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .title("FLOP/byte")
                .bounds([x_min, x_max])
                .labels([label(x_min), label(x_max)]),
        )
        .y_axis(
            Axis::default()
                .title("GFLOP/s")
                .bounds([y_min, y_max])
                .labels([label(y_min), label(y_max)]),
        );
    frame.render_widget(chart, area);
}

/// A range holding every value and `also`, widened by half a decade each side.
fn bounds(values: impl Iterator<Item = f64>, also: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((also, also), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo - 0.5, hi + 0.5)
}

#[cfg(test)]
mod tests {
    use crate::app::{App, OpColumn, View};
    use crate::testkit::{dashboard, screen};

    #[test]
    fn ops_by_share() {
        let mut app = App::new(dashboard());
        app.view = View::Ops;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }

    #[test]
    fn s_sorts_by_the_next_column() {
        let mut app = App::new(dashboard());
        app.view = View::Ops;
        app.ops_sort = OpColumn::Count;
        app.ops_descending = false;
        let rows = super::sorted(&app);
        assert!(rows.windows(2).all(|w| w[0].count <= w[1].count));
    }
}
