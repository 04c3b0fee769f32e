//! View 2: a row per rank, its spans coloured by category on the visible stretch of time (inner
//! spans drawn over the spans that hold them), a time axis, the selected span's arguments, and
//! the ranks and stretches of time the selected finding names marked.

use super::{bytes, category_color, dim, duration};
use crate::app::App;
use pinch_analyzer::{SpanRow, SpanTrack};
use pinch_traces::Category;
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

/// The rank labels' column.
const LABEL_WIDTH: u16 = 10;
/// Lines of the selected span's details.
const DETAIL_LINES: u16 = 4;

/// The view's parts: time axis, the finding's marks, the rows, the legend, the span's details.
fn areas(area: Rect) -> [Rect; 5] {
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(DETAIL_LINES + 2),
    ])
    .areas(area)
}

/// What the cell at (`column`, `row`) of the view's `area` shows: a rank's row and the time
/// that cell covers.
pub fn hit(app: &App, area: Rect, column: u16, row: u16) -> super::Hit {
    let [_, _, rows, _, _] = areas(area);
    let lanes = lanes_area(rows);
    let inside = (rows.y..rows.y + rows.height).contains(&row)
        && (lanes.x..lanes.x + lanes.width).contains(&column);
    let first = first_row(app, usize::from(rows.height));
    let track = first + usize::from(row.saturating_sub(rows.y));
    let cursor = &app.timeline;
    if !inside || track >= app.dash.spans.tracks().len() || cursor.width_ns <= 0 {
        return super::Hit::Nothing;
    }
    let ns_per_cell = cursor.width_ns as f64 / f64::from(lanes.width);
    let x = f64::from(column - lanes.x);
    let at = |cells: f64| cursor.start_ns + (cells * ns_per_cell) as i64;
    super::Hit::Timeline {
        row: track,
        from_ns: at(x),
        to_ns: at(x + 1.0).max(at(x) + 1),
    }
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let [axis, marks, rows, legend, detail] = areas(area);
    render_axis(app, frame.buffer_mut(), axis);
    render_marks(app, frame.buffer_mut(), marks);
    render_rows(app, frame.buffer_mut(), rows);
    let width = duration(app.timeline.width_ns.max(0) as u64);
    frame.render_widget(Paragraph::new(legend_line(&width)), legend);
    render_detail(app, frame, detail);
}

/// Times at the left edge, the middle and the right edge, since the run's first span.
fn render_axis(app: &App, buf: &mut Buffer, area: Rect) {
    let cursor = &app.timeline;
    let at = |ns: i64| format!("{:+.6} s", ns as f64 / 1e9);
    let lanes = lanes_area(area);
    let left = at(cursor.start_ns);
    let middle = at(cursor.start_ns + cursor.width_ns / 2);
    let right = at(cursor.start_ns + cursor.width_ns);
    let style = Style::new().fg(Color::Cyan);
    buf.set_string(lanes.x, area.y, &left, style);
    let mid_x = lanes.x + lanes.width / 2 - (middle.len() as u16 / 2).min(lanes.width / 2);
    buf.set_string(mid_x, area.y, &middle, style);
    let right_x = (lanes.x + lanes.width).saturating_sub(right.len() as u16);
    buf.set_string(right_x, area.y, &right, style);
}

/// The selected finding's stretches on the visible time: a cell is marked when a stretch
/// overlaps it, so a stretch narrower than a cell still shows.
fn render_marks(app: &App, buf: &mut Buffer, area: Rect) {
    let Some(finding) = app.dash.findings.get(app.finding) else {
        return;
    };
    let style = Style::new().fg(Color::Red);
    buf.set_string(
        area.x,
        area.y,
        format!("finding {}", app.finding + 1),
        style,
    );
    let lanes = lanes_area(area);
    let cursor = &app.timeline;
    if finding.stretches.is_empty() {
        let text = "concerns the whole run (no stretch of time to mark)";
        buf.set_string(lanes.x, area.y, text, dim());
        return;
    }
    let width = usize::from(lanes.width);
    if width == 0 || cursor.width_ns <= 0 {
        return;
    }
    let view_end_ns = cursor.start_ns.saturating_add(cursor.width_ns);
    let cells_per_ns = width as f64 / cursor.width_ns as f64;
    let cell_of = |ns: i64| {
        let x = (ns.saturating_sub(cursor.start_ns)) as f64 * cells_per_ns;
        x.clamp(0.0, (width - 1) as f64) as usize
    };
    for stretch in &finding.stretches {
        let duration_ns = i64::try_from(stretch.duration_ns).unwrap_or(i64::MAX);
        let end_ns = stretch.start_ns.saturating_add(duration_ns.max(1));
        if end_ns <= cursor.start_ns || stretch.start_ns >= view_end_ns {
            continue;
        }
        for x in cell_of(stretch.start_ns)..=cell_of(end_ns - 1) {
            buf[(lanes.x + x as u16, area.y)]
                .set_symbol("▀")
                .set_style(style);
        }
    }
}

fn lanes_area(area: Rect) -> Rect {
    Rect {
        x: area.x + LABEL_WIDTH,
        width: area.width.saturating_sub(LABEL_WIDTH),
        ..area
    }
}

/// The first row shown: the selected row stays in view.
fn first_row(app: &App, lines: usize) -> usize {
    let row = app.timeline.row;
    let first = app.timeline.first_row.min(row);
    if lines == 0 || row < first + lines {
        first
    } else {
        row + 1 - lines
    }
}

fn render_rows(app: &App, buf: &mut Buffer, area: Rect) {
    let dash = &app.dash;
    let lines = area.height as usize;
    let first = first_row(app, lines);
    let marked: Vec<u32> = dash
        .findings
        .get(app.finding)
        .map(|f| f.location.ranks.clone())
        .unwrap_or_default();
    for (k, track) in dash
        .spans
        .tracks()
        .iter()
        .enumerate()
        .skip(first)
        .take(lines)
    {
        let y = area.y + (k - first) as u16;
        let selected = k == app.timeline.row;
        let named = marked.contains(&track.rank.0);
        let label_style = match (selected, named) {
            (true, _) => Style::new().add_modifier(Modifier::REVERSED),
            (false, true) => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            _ => Style::new(),
        };
        let mark = if named { "!" } else { " " };
        buf.set_string(
            area.x,
            y,
            format!("{mark}rank {:<4}", track.rank.0),
            label_style,
        );
        let lane = Rect {
            y,
            height: 1,
            ..lanes_area(area)
        };
        paint_lane(app, track, buf, lane);
    }
}

/// Paints one rank's spans on its lane: each cell takes the colour of the last span (the
/// innermost) that overlaps it; the selected span is drawn reversed. Cells are decided first
/// and written to the buffer once: zoomed out, thousands of spans share a cell.
fn paint_lane(app: &App, track: &SpanTrack, buf: &mut Buffer, lane: Rect) {
    let cursor = &app.timeline;
    let spans = &app.dash.spans;
    let width = usize::from(lane.width);
    if width == 0 || cursor.width_ns <= 0 {
        return;
    }
    let view_end_ns = cursor.start_ns.saturating_add(cursor.width_ns);
    let earliest_ns = cursor
        .start_ns
        .saturating_sub(i64::try_from(track.longest_ns).unwrap_or(i64::MAX));
    let from = spans.first_starting_at(track, earliest_ns);
    let to = spans.first_starting_at(track, view_end_ns);
    let cells_per_ns = width as f64 / cursor.width_ns as f64;
    let cell_of = |ns: i64| {
        let x = (ns.saturating_sub(cursor.start_ns)) as f64 * cells_per_ns;
        x.clamp(0.0, (width - 1) as f64) as usize
    };
    let mut cells: Vec<Option<(Category, bool)>> = vec![None; width];
    for span in spans.spans_of(track, from..to) {
        if span.end_ns() <= cursor.start_ns {
            continue;
        }
        let selected = cursor.span == Some(span.index);
        let (x0, x1) = (cell_of(span.start_ns), cell_of(span.end_ns() - 1));
        cells[x0..=x1].fill(Some((span.category, selected)));
    }
    for (x, cell) in cells.into_iter().enumerate() {
        if let Some((category, selected)) = cell {
            buf[(lane.x + x as u16, lane.y)]
                .set_symbol(symbol(category))
                .set_style(span_style(category, selected));
        }
    }
}

/// A category's cell: its colour, and a letter too, for terminals without colour.
fn symbol(category: Category) -> &'static str {
    match category {
        Category::Compute => "█",
        Category::Communication => "▒",
        Category::Memory => "▓",
        Category::Host => "░",
        Category::Wait => "·",
    }
}

fn span_style(category: Category, selected: bool) -> Style {
    let style = Style::new().fg(category_color(category));
    if selected {
        style
            .fg(Color::White)
            .bg(Color::Black)
            .add_modifier(Modifier::REVERSED)
    } else {
        style
    }
}

/// The categories' symbols, the finding mark and how much time the view spans.
fn legend_line(width: &str) -> Line<'static> {
    let categories = [
        (Category::Compute, "compute"),
        (Category::Communication, "communication"),
        (Category::Memory, "memory"),
        (Category::Host, "host"),
        (Category::Wait, "wait"),
    ];
    let mut spans = Vec::new();
    for (category, name) in categories {
        spans.push(Span::styled(
            symbol(category),
            Style::new().fg(category_color(category)),
        ));
        spans.push(Span::raw(format!(" {name}  ")));
    }
    spans.push(Span::styled(
        "! ▀ the finding's ranks, times",
        Style::new().fg(Color::Red),
    ));
    spans.push(Span::styled(format!("  view {width} wide"), dim()));
    Line::from(spans)
}

fn render_detail(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::bordered().title(" selected span ");
    let text = match &app.span_row {
        Some(Ok(row)) => detail_lines(row),
        Some(Err(why)) => vec![Line::styled(
            format!("its arguments cannot be read: {why}"),
            Style::new().fg(Color::Red),
        )],
        None => vec![Line::styled(
            "none: n or Enter selects the rank's next span, c its next collective",
            dim(),
        )],
    };
    frame.render_widget(Paragraph::new(text).block(block), area);
}

fn detail_lines(span: &SpanRow) -> Vec<Line<'static>> {
    let name = &span.op;
    let head = format!(
        "{name} ({}) on rank {}: starts {:+.6} s, lasts {}",
        span.category.name(),
        span.rank.0,
        span.start_ns as f64 / 1e9,
        duration(span.duration_ns)
    );
    let a = &span.attrs;
    let mut args: Vec<String> = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            args.push(format!("{name} {v}"));
        }
    };
    add("layer", a.layer.map(|v| v.to_string()));
    add("step", a.step.map(|v| v.to_string()));
    add("micro-batch", a.micro_batch.map(|v| v.to_string()));
    add("request", a.request_id.map(|v| v.to_string()));
    add("FLOPs", a.flops.map(|v| format!("{v:.3e}", v = v as f64)));
    add("bytes", a.bytes.map(|v| bytes(v as f64)));
    let seconds = span.duration_ns as f64 / 1e9;
    if let Some(b) = a.bytes.filter(|_| seconds > 0.0) {
        add(
            "achieved",
            Some(format!("{:.2} GB/s", b as f64 / seconds / 1e9)),
        );
    }
    let mut lines = vec![Line::raw(head), Line::raw(args.join("  "))];
    if let Some(c) = a.collective {
        let mut parts = vec![
            format!("{} #{} on group {}", c.kind.name(), c.seq, c.group),
            format!("{} participants", c.participants),
            // No collective moves 0 bytes: 0 is a size the trace did not record.
            match c.message_bytes {
                0 => "message size not recorded".to_string(),
                b => format!("message {}", bytes(b as f64)),
            },
        ];
        parts.extend(c.peer.map(|p| format!("peer rank {}", p.0)));
        parts.extend(c.wait_ns.map(|w| format!("waited {}", duration(w))));
        lines.push(Line::raw(parts.join(", ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use crate::app::{App, View};
    use crate::testkit::{dashboard, screen};

    #[test]
    fn timeline_whole_run() {
        let mut app = App::new(dashboard());
        app.view = View::Timeline;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }

    #[test]
    fn timeline_zoomed_with_a_collective_selected() {
        let mut app = App::new(dashboard());
        app.view = View::Timeline;
        app.timeline.row = 1;
        app.select(Some(app.dash.spans.tracks()[1].spans.start + 2));
        app.timeline.start_ns = 0;
        app.timeline.width_ns = 400_000;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }
}
