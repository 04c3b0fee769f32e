//! Draws the app: a header (the run, dropped events), the view tabs, the current view, a line of
//! keys, and the help overlay; and says what lies under a cell, for the mouse. Reads the app,
//! never changes it.

mod comm;
mod findings;
mod ops;
mod overview;
mod serving;
mod timeline;

use crate::app::{App, View};
use pinch_traces::Category;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Tabs, Wrap};

/// The smallest terminal the views are laid out for.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// What lies under one cell of the screen, for the mouse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// A view's tab.
    Tab(View),
    /// A row of the timeline (an index into its tracks) and the stretch of time one cell covers
    /// there.
    Timeline {
        row: usize,
        from_ns: i64,
        to_ns: i64,
    },
    Nothing,
}

/// The screen's parts: header, tabs, the view's body and the keys line.
fn screen_areas(area: Rect) -> [Rect; 4] {
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// What the cell at (`column`, `row`) of a screen of `area` shows.
pub fn hit(app: &App, area: Rect, column: u16, row: u16) -> Hit {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT || app.help {
        return Hit::Nothing;
    }
    let [_, tabs, body, _] = screen_areas(area);
    if row == tabs.y {
        return tab_at(column.saturating_sub(tabs.x));
    }
    if app.view == View::Timeline {
        return timeline::hit(app, body, column, row);
    }
    Hit::Nothing
}

/// The tab at `x` cells from the tabs' left edge: each title has a space either side and a
/// divider after it, as `Tabs` draws them.
fn tab_at(x: u16) -> Hit {
    let mut left = 0;
    for (i, view) in View::ALL.iter().enumerate() {
        let width = format!("{} {}", i + 1, view.title()).chars().count() as u16 + 2;
        if x < left + width {
            return Hit::Tab(*view);
        }
        left += width + 1;
    }
    Hit::Nothing
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    let [header, tabs, body, keys] = screen_areas(area);
    render_header(app, frame, header);
    render_tabs(app, frame, tabs);
    match app.view {
        View::Overview => overview::render(app, frame, body),
        View::Timeline => timeline::render(app, frame, body),
        View::Findings => findings::render(app, frame, body),
        View::Ops => ops::render(app, frame, body),
        View::Comm => comm::render(app, frame, body),
        View::Serving => serving::render(app, frame, body),
    }
    frame.render_widget(Paragraph::new(keys_line(app.view)).style(dim()), keys);
    if app.help {
        render_help(frame, area);
    }
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = format!(
        "pinch needs a terminal of at least {MIN_WIDTH}x{MIN_HEIGHT}; this one is {}x{}. Make it larger, or press q to quit.",
        area.width, area.height
    );
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

fn render_header(app: &App, frame: &mut Frame, area: Rect) {
    let dash = &app.dash;
    let state = if dash.live { "live" } else { "recorded" };
    let dropped = match dash.dropped_spans {
        Some(0) => Span::raw("dropped events: 0"),
        Some(n) => Span::styled(
            format!("dropped events: {n}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        None => Span::styled("dropped events: not counted", dim()),
    };
    let line = Line::from(vec![
        Span::styled(
            dash.title.clone(),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("  [{state}]  ")),
        dropped,
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn render_tabs(app: &App, frame: &mut Frame, area: Rect) {
    let titles = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()));
    let selected = View::ALL.iter().position(|&v| v == app.view);
    let tabs = Tabs::new(titles)
        .select(selected)
        .highlight_style(Style::new().fg(Color::Black).bg(Color::Cyan))
        .divider("|");
    frame.render_widget(tabs, area);
}

/// The keys the current view takes, after the ones every view takes.
fn keys_line(view: View) -> String {
    let own = match view {
        View::Timeline => "←→ pan  +- zoom  0 all  ↑↓ rank  n span  c collective  f finding",
        View::Findings => "↑↓ select  Enter evidence, again: timeline  t timeline",
        View::Ops => "↑↓ PgUp PgDn select  s sort column  r reverse",
        View::Comm => "b bytes / bandwidth",
        View::Overview => "↑↓ PgUp PgDn rank  Enter its timeline",
        View::Serving => "",
    };
    format!("1-6/Tab views  ? help  q quit  {own}")
}

fn render_help(frame: &mut Frame, area: Rect) {
    let lines = [
        "pinch dashboard",
        "",
        "1-6, Tab, Shift-Tab  switch views: overview, timeline, findings, ops,",
        "                     communication, serving",
        "?                    this help (any key closes it)",
        "q, Ctrl-C            quit",
        "",
        "Timeline   ← → or h l pan, + - zoom, 0 the whole run, ↑ ↓ or j k choose a rank,",
        "           n or Enter the rank's next span, c its next collective, Esc none",
        "           f the selected finding's next stretch of time",
        "Findings   ↑ ↓ choose, Enter shows the evidence, Enter again (or t) shows it",
        "           on the timeline",
        "Overview   ↑ ↓ PgUp PgDn Home End choose a rank (its node shows), Enter: its",
        "           row on the timeline",
        "Ops        ↑ ↓ PgUp PgDn Home End choose an op, s sorts by the next column,",
        "           r reverses",
        "Comm       b colours the matrix by bytes or by achieved bandwidth",
        "Mouse      click a tab or a span; the wheel zooms the timeline about the",
        "           pointer and moves the other views' selections",
    ];
    let width =
        (lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4).min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let text: Vec<Line> = lines.iter().map(|&l| Line::raw(l)).collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" help ")),
        popup,
    );
}

/// The colour of a span category, everywhere the dashboard shows one.
pub fn category_color(category: Category) -> Color {
    match category {
        Category::Compute => Color::Green,
        Category::Communication => Color::Magenta,
        Category::Memory => Color::Yellow,
        Category::Host => Color::Blue,
        Category::Wait => Color::Red,
    }
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// A percentage, or "-" where it is missing.
fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}%"))
}

/// A duration in the unit that suits it.
fn duration(ns: u64) -> String {
    pinch_traces::units::fmt_ns(ns)
}

/// Bytes (or bytes per second) in binary units; a fraction of a byte is dropped.
fn bytes(value: f64) -> String {
    pinch_traces::units::fmt_bytes(value.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{dashboard, screen};

    #[test]
    fn a_small_terminal_is_asked_for_more_room() {
        let app = App::new(dashboard());
        let text = screen(&app, 60, 20);
        assert!(text.contains("at least 80x24; this one is 60x20"), "{text}");
    }

    #[test]
    fn help_overlay() {
        let mut app = App::new(dashboard());
        app.help = true;
        insta::assert_snapshot!(screen(&app, 80, 24));
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(duration(999), "999 ns");
        assert_eq!(duration(1_500), "1.5 µs");
        assert_eq!(duration(2_500_000), "2.50 ms");
        assert_eq!(duration(3_000_000_000), "3.00 s");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }
}
