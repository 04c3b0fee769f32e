//! The dashboard's state of interaction: which view is up, where the timeline looks, what is
//! selected, and how a key changes that. Drawing is `view`'s; this module never draws.

use crate::state::Dashboard;
use crate::view::Hit;
use pinch_analyzer::{SpanRow, Stretch};
use pinch_traces::{Category, Rank};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;

/// The views, in the order of their number keys (1-6) and of Tab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Overview,
    Timeline,
    Findings,
    Ops,
    Comm,
    Serving,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Overview,
        View::Timeline,
        View::Findings,
        View::Ops,
        View::Comm,
        View::Serving,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Timeline => "Timeline",
            View::Findings => "Findings",
            View::Ops => "Ops",
            View::Comm => "Communication",
            View::Serving => "Serving",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|&v| v == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> View {
        let n = View::ALL.len() as isize;
        View::ALL[(self.index() as isize + by).rem_euclid(n) as usize]
    }
}

/// Where the timeline looks and what it has selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineCursor {
    /// The time at the left edge, timeline ns.
    pub start_ns: i64,
    /// How much time the width shows; at least `MIN_WIDTH_NS`.
    pub width_ns: i64,
    /// The selected rank's row (an index into `Timeline::ranks()`).
    pub row: usize,
    /// The first row shown (rows scroll when there are more ranks than lines).
    pub first_row: usize,
    /// The selected span, an index into the dashboard's span columns.
    pub span: Option<usize>,
}

/// The narrowest the timeline zooms to: a microsecond across the screen.
pub const MIN_WIDTH_NS: i64 = 1_000;

/// How the ops table is sorted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpColumn {
    Share,
    Count,
    Median,
    Gflops,
    Gbps,
    Name,
}

impl OpColumn {
    const ORDER: [OpColumn; 6] = [
        OpColumn::Share,
        OpColumn::Count,
        OpColumn::Median,
        OpColumn::Gflops,
        OpColumn::Gbps,
        OpColumn::Name,
    ];

    fn next(self) -> OpColumn {
        let at = OpColumn::ORDER.iter().position(|&c| c == self).unwrap_or(0);
        OpColumn::ORDER[(at + 1) % OpColumn::ORDER.len()]
    }
}

/// What the communication heatmap colours by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommMetric {
    Bytes,
    Bandwidth,
}

/// A list's selection after an arrow, page or Home/End key, within `count` rows.
fn moved(at: usize, code: KeyCode, count: usize) -> usize {
    const PAGE: usize = 10;
    let last = count.saturating_sub(1);
    match code {
        KeyCode::Up | KeyCode::Char('k') => at.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => (at + 1).min(last),
        KeyCode::PageUp => at.saturating_sub(PAGE),
        KeyCode::PageDown => (at + PAGE).min(last),
        KeyCode::Home => 0,
        KeyCode::End => last,
        _ => at,
    }
}

/// The dashboard and how the user is looking at it.
#[derive(Debug)]
pub struct App {
    pub dash: Dashboard,
    pub view: View,
    pub help: bool,
    pub timeline: TimelineCursor,
    /// The selected finding.
    pub finding: usize,
    /// Whether the selected finding's evidence is open.
    pub evidence: bool,
    /// The selected span whole, read when it was selected (never while drawing), or why it
    /// could not be read.
    pub span_row: Option<Result<SpanRow, String>>,
    /// The overview's selected rank (an index into the dashboard's ranks); its node is kept
    /// in view.
    pub overview_rank: usize,
    /// The ops table's selected row, in the order shown.
    pub ops_row: usize,
    pub ops_sort: OpColumn,
    pub ops_descending: bool,
    pub comm_metric: CommMetric,
    pub quit: bool,
}

impl App {
    pub fn new(dash: Dashboard) -> App {
        let width_ns = dash.spans.end_ns().max(MIN_WIDTH_NS);
        App {
            dash,
            view: View::Overview,
            help: false,
            timeline: TimelineCursor {
                start_ns: 0,
                width_ns,
                row: 0,
                first_row: 0,
                span: None,
            },
            finding: 0,
            evidence: false,
            span_row: None,
            overview_rank: 0,
            ops_row: 0,
            ops_sort: OpColumn::Share,
            ops_descending: true,
            comm_metric: CommMetric::Bytes,
            quit: false,
        }
    }

    /// Takes a newer dashboard of the same run (a live source), keeping what the user looks at.
    pub fn update(&mut self, dash: Dashboard) {
        let followed_end =
            self.timeline.start_ns + self.timeline.width_ns >= self.dash.spans.end_ns();
        self.dash = dash;
        if followed_end && self.timeline.start_ns == 0 {
            self.timeline.width_ns = self.dash.spans.end_ns().max(MIN_WIDTH_NS);
        }
        self.finding = self.finding.min(self.dash.findings.len().saturating_sub(1));
        self.overview_rank = self
            .overview_rank
            .min(self.dash.ranks.len().saturating_sub(1));
        self.ops_row = self.ops_row.min(self.dash.ops.len().saturating_sub(1));
        let kept = self.timeline.span.filter(|&i| i < self.dash.spans.len());
        self.select(kept);
    }

    /// Selects span `index` (or none) and reads its arguments.
    pub fn select(&mut self, index: Option<usize>) {
        self.timeline.span = index;
        self.span_row = index.map(|i| self.dash.details.row(i));
    }

    /// Applies one key.
    pub fn key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            self.quit = key.code == KeyCode::Char('q');
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.view = self.view.step(1),
            KeyCode::BackTab => self.view = self.view.step(-1),
            KeyCode::Char(c @ '1'..='6') => self.view = View::ALL[c as usize - '1' as usize],
            _ => self.view_key(key.code),
        }
    }

    fn view_key(&mut self, code: KeyCode) {
        match self.view {
            View::Timeline => self.timeline_key(code),
            View::Findings => self.findings_key(code),
            View::Overview => match code {
                KeyCode::Enter => self.show_rank_on_timeline(),
                _ => self.overview_rank = moved(self.overview_rank, code, self.dash.ranks.len()),
            },
            View::Ops => match code {
                KeyCode::Char('s') => self.ops_sort = self.ops_sort.next(),
                KeyCode::Char('r') => self.ops_descending = !self.ops_descending,
                _ => self.ops_row = moved(self.ops_row, code, self.dash.ops.len()),
            },
            View::Comm => {
                if code == KeyCode::Char('b') {
                    self.comm_metric = match self.comm_metric {
                        CommMetric::Bytes => CommMetric::Bandwidth,
                        CommMetric::Bandwidth => CommMetric::Bytes,
                    };
                }
            }
            View::Serving => {}
        }
    }

    fn findings_key(&mut self, code: KeyCode) {
        let count = self.dash.findings.len();
        match code {
            KeyCode::Up | KeyCode::Char('k') => self.finding = self.finding.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                self.finding = (self.finding + 1).min(count.saturating_sub(1));
            }
            KeyCode::Enter if self.evidence => self.jump_to_finding(),
            KeyCode::Enter => self.evidence = count > 0,
            KeyCode::Esc => self.evidence = false,
            KeyCode::Char('t') => self.jump_to_finding(),
            _ => {}
        }
    }

    fn timeline_key(&mut self, code: KeyCode) {
        let ranks = self.dash.spans.tracks().len();
        let cursor = &mut self.timeline;
        match code {
            KeyCode::Left | KeyCode::Char('h') => cursor.start_ns -= cursor.width_ns / 8,
            KeyCode::Right | KeyCode::Char('l') => cursor.start_ns += cursor.width_ns / 8,
            KeyCode::Char('+') | KeyCode::Char('=') => self.zoom(0.5),
            KeyCode::Char('-') => self.zoom(2.0),
            KeyCode::Char('0') | KeyCode::Home => self.whole_run(),
            KeyCode::Up | KeyCode::Char('k') => cursor.row = cursor.row.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                cursor.row = (cursor.row + 1).min(ranks.saturating_sub(1));
            }
            KeyCode::Char('n') | KeyCode::Enter => self.select_next(|_| true),
            KeyCode::Char('c') => self.select_next(|c| c == Category::Communication),
            KeyCode::Char('f') => self.next_stretch(),
            KeyCode::Esc => self.select(None),
            _ => {}
        }
    }

    /// Zooms by `factor` about the middle of the view (or the selected span).
    fn zoom(&mut self, factor: f64) {
        let cursor = &self.timeline;
        let centre_ns = match cursor.span {
            Some(i) => self.dash.spans.span(i).map_or(0, |s| s.start_ns),
            None => cursor.start_ns + cursor.width_ns / 2,
        };
        self.zoom_about(factor, centre_ns, 0.5);
    }

    /// Zooms by `factor`, putting `at_ns` at `share` of the view's width from its left edge.
    fn zoom_about(&mut self, factor: f64, at_ns: i64, share: f64) {
        let cursor = &mut self.timeline;
        let end_ns = self.dash.spans.end_ns().max(MIN_WIDTH_NS);
        cursor.width_ns = ((cursor.width_ns as f64 * factor) as i64).clamp(MIN_WIDTH_NS, end_ns);
        cursor.start_ns = at_ns - (share * cursor.width_ns as f64) as i64;
    }

    fn whole_run(&mut self) {
        self.timeline.start_ns = 0;
        self.timeline.width_ns = self.dash.spans.end_ns().max(MIN_WIDTH_NS);
    }

    /// The rank of the selected row.
    pub fn selected_rank(&self) -> Option<Rank> {
        self.dash
            .spans
            .tracks()
            .get(self.timeline.row)
            .map(|t| t.rank)
    }

    /// Selects the selected row's next span (after the selected one, else from the view's left
    /// edge) whose category passes, and brings it into view.
    fn select_next(&mut self, wanted: impl Fn(Category) -> bool) {
        let spans = &self.dash.spans;
        let Some(track) = spans.tracks().get(self.timeline.row) else {
            return;
        };
        let after = match self.timeline.span {
            Some(i) if track.spans.contains(&i) => i + 1,
            _ => spans.first_starting_at(track, self.timeline.start_ns),
        };
        let Some(found) = spans
            .spans_of(track, after..track.spans.end)
            .find(|s| wanted(s.category))
        else {
            return;
        };
        self.select(Some(found.index));
        self.bring_into_view(found.index);
    }

    /// Pans (and zooms out if needed) so that span `i` shows whole.
    fn bring_into_view(&mut self, i: usize) {
        let Some(span) = self.dash.spans.span(i) else {
            return;
        };
        let cursor = &mut self.timeline;
        let duration_ns = i64::try_from(span.duration_ns).unwrap_or(i64::MAX);
        if duration_ns > cursor.width_ns {
            cursor.width_ns = duration_ns.saturating_mul(2).max(MIN_WIDTH_NS);
        }
        let end_ns = span.end_ns();
        if span.start_ns < cursor.start_ns || end_ns > cursor.start_ns + cursor.width_ns {
            cursor.start_ns = span.start_ns - cursor.width_ns / 4;
        }
    }

    /// Applies one mouse event on a screen of `area`: a click on a tab switches to it, a click
    /// on the timeline selects the span drawn in that cell (the innermost), the wheel zooms the
    /// timeline about the pointer and moves the other views' selections.
    pub fn mouse(&mut self, event: MouseEvent, area: Rect) {
        let hit = crate::view::hit(self, area, event.column, event.row);
        match (event.kind, hit) {
            (MouseEventKind::Down(MouseButton::Left), Hit::Tab(view)) => self.view = view,
            (
                MouseEventKind::Down(MouseButton::Left),
                Hit::Timeline {
                    row,
                    from_ns,
                    to_ns,
                },
            ) => {
                self.timeline.row = row;
                let span = self.span_in(row, from_ns, to_ns);
                self.select(span);
            }
            (MouseEventKind::ScrollUp, Hit::Timeline { from_ns, .. }) => self.zoom_at(0.8, from_ns),
            (MouseEventKind::ScrollDown, Hit::Timeline { from_ns, .. }) => {
                self.zoom_at(1.25, from_ns);
            }
            (MouseEventKind::ScrollUp, _) if self.view != View::Timeline => {
                self.view_key(KeyCode::Up);
            }
            (MouseEventKind::ScrollDown, _) if self.view != View::Timeline => {
                self.view_key(KeyCode::Down);
            }
            _ => {}
        }
    }

    /// Zooms by `factor`, keeping the time `at_ns` under the same cell.
    fn zoom_at(&mut self, factor: f64, at_ns: i64) {
        let cursor = &self.timeline;
        let share = (at_ns - cursor.start_ns) as f64 / cursor.width_ns.max(1) as f64;
        self.zoom_about(factor, at_ns, share);
    }

    /// On row `row`, the last-starting span that overlaps `[from_ns, to_ns)`: the one a cell of
    /// that time shows.
    fn span_in(&self, row: usize, from_ns: i64, to_ns: i64) -> Option<usize> {
        let spans = &self.dash.spans;
        let track = spans.tracks().get(row)?;
        let longest_ns = i64::try_from(track.longest_ns).unwrap_or(i64::MAX);
        let first = spans.first_starting_at(track, from_ns.saturating_sub(longest_ns));
        let last = spans.first_starting_at(track, to_ns);
        spans
            .spans_of(track, first..last)
            .filter(|s| s.end_ns() > from_ns)
            .last()
            .map(|s| s.index)
    }

    /// The overview's selected rank, on its row of the timeline.
    fn show_rank_on_timeline(&mut self) {
        let Some(rank) = self
            .dash
            .ranks
            .get(self.overview_rank)
            .map(|r| Rank(r.rank))
        else {
            return;
        };
        if let Some(row) = self.dash.spans.tracks().iter().position(|t| t.rank == rank) {
            self.timeline.row = row;
            self.view = View::Timeline;
        }
    }

    /// Shows the selected finding on the timeline: its first rank's row, and there its first
    /// stretch (when it has any) with the first span of the first op it names from that time
    /// on (the span running at the stretch's start if it names none, the rank's first span
    /// without stretches).
    pub fn jump_to_finding(&mut self) {
        let Some(finding) = self.dash.findings.get(self.finding) else {
            return;
        };
        let row = finding
            .location
            .ranks
            .first()
            .and_then(|&r| {
                let tracks = self.dash.spans.tracks();
                tracks.iter().position(|t| t.rank == Rank(r))
            })
            .unwrap_or(0);
        let first = finding.stretches.first().copied();
        self.view = View::Timeline;
        self.evidence = false;
        self.timeline.row = row;
        match first {
            Some(stretch) => self.show_stretch(stretch),
            None => {
                let hit = self.span_at(row, i64::MIN);
                self.select(hit);
                if let Some(i) = hit {
                    self.bring_into_view(i);
                }
            }
        }
    }

    /// Moves the view to the selected finding's next stretch after the view's middle (the
    /// first one after the last).
    fn next_stretch(&mut self) {
        let Some(finding) = self.dash.findings.get(self.finding) else {
            return;
        };
        let middle_ns = self.timeline.start_ns + self.timeline.width_ns / 2;
        let next = finding
            .stretches
            .iter()
            .find(|s| s.start_ns > middle_ns)
            .or(finding.stretches.first())
            .copied();
        if let Some(stretch) = next {
            self.show_stretch(stretch);
        }
    }

    /// Frames a stretch in the middle third of the view and selects the span there.
    fn show_stretch(&mut self, stretch: Stretch) {
        let duration_ns = i64::try_from(stretch.duration_ns).unwrap_or(i64::MAX / 4);
        let cursor = &mut self.timeline;
        cursor.width_ns = duration_ns.saturating_mul(3).max(MIN_WIDTH_NS);
        cursor.start_ns = stretch.start_ns + duration_ns / 2 - cursor.width_ns / 2;
        let hit = self.span_at(self.timeline.row, stretch.start_ns);
        self.select(hit);
    }

    /// On row `row`: the first span from `at_ns` on of the selected finding's first op, or
    /// without one, the span running at `at_ns` (else the next one).
    fn span_at(&self, row: usize, at_ns: i64) -> Option<usize> {
        let spans = &self.dash.spans;
        let track = spans.tracks().get(row)?;
        let op = self
            .dash
            .findings
            .get(self.finding)
            .and_then(|f| f.location.ops.first());
        let longest_ns = i64::try_from(track.longest_ns).unwrap_or(i64::MAX);
        let from = spans.first_starting_at(track, at_ns.saturating_sub(longest_ns));
        let mut after = spans.spans_of(track, from..track.spans.end);
        let found = match op {
            Some(op) => after.find(|s| s.start_ns >= at_ns && spans.name(s.name) == op.as_str()),
            None => after.find(|s| s.end_ns() > at_ns),
        };
        found
            .map(|s| s.index)
            .or_else(|| (!track.spans.is_empty()).then_some(track.spans.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::dashboard;

    fn press(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    #[test]
    fn number_keys_and_tab_switch_views_and_q_quits() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('3'));
        assert_eq!(app.view, View::Findings);
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.view, View::Ops);
        press(&mut app, KeyCode::BackTab);
        press(&mut app, KeyCode::BackTab);
        assert_eq!(app.view, View::Timeline);
        press(&mut app, KeyCode::Char('6'));
        press(&mut app, KeyCode::Tab);
        assert_eq!(app.view, View::Overview);
        assert!(!app.quit);
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn help_opens_on_question_mark_and_any_key_closes_it() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('?'));
        assert!(app.help);
        press(&mut app, KeyCode::Char('2'));
        assert!(!app.help);
        assert_eq!(app.view, View::Overview, "the key only closed the help");
    }

    #[test]
    fn zoom_narrows_about_the_middle_and_zero_shows_the_whole_run() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('2'));
        let whole = app.timeline.width_ns;
        press(&mut app, KeyCode::Char('+'));
        assert_eq!(app.timeline.width_ns, whole / 2);
        assert_eq!(app.timeline.start_ns, whole / 4);
        press(&mut app, KeyCode::Char('0'));
        assert_eq!((app.timeline.start_ns, app.timeline.width_ns), (0, whole));
    }

    #[test]
    fn c_jumps_to_the_rows_next_collective() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('2'));
        press(&mut app, KeyCode::Char('c'));
        let first = app.timeline.span.expect("a collective");
        let span = app.dash.spans.span(first).unwrap();
        assert_eq!(span.category, Category::Communication);
        let row = app.span_row.clone().unwrap().unwrap();
        assert_eq!(row.op, "all_reduce");
        assert!(row.attrs.collective.is_some(), "{row:?}");
        press(&mut app, KeyCode::Char('c'));
        let second = app.timeline.span.expect("another collective");
        assert!(second > first);
        assert_eq!(app.dash.spans.span(second).unwrap().rank, span.rank);
        press(&mut app, KeyCode::Esc);
        assert_eq!((app.timeline.span, app.span_row.is_none()), (None, true));
    }

    #[test]
    fn enter_opens_a_findings_evidence_then_jumps_to_its_rank_and_op() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        assert!(app.evidence);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view, View::Timeline);
        let finding = &app.dash.findings[1];
        let span = app
            .dash
            .spans
            .span(app.timeline.span.expect("a span"))
            .unwrap();
        assert_eq!(span.rank.0, finding.location.ranks[0]);
        assert_eq!(app.dash.spans.name(span.name), finding.location.ops[0]);
    }

    fn mouse(app: &mut App, kind: MouseEventKind, column: u16, row: u16) {
        let event = MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        };
        app.mouse(event, Rect::new(0, 0, 100, 30));
    }

    #[test]
    fn a_click_on_a_tab_opens_its_view() {
        let mut app = App::new(dashboard());
        // " 1 Overview |" then " 2 Timeline |", " 3 Findings |", " 4 Ops |".
        mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 43, 1);
        assert_eq!(app.view, View::Ops);
        mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 20, 1);
        assert_eq!(app.view, View::Timeline);
    }

    #[test]
    fn a_click_on_the_timeline_selects_the_span_in_that_cell_and_the_wheel_zooms_there() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('2'));
        // Rows start under the axis and the finding's marks (y 4); lanes after the labels
        // (x 10). Rank 1's first all-reduce runs from 72 to 92 µs, cells are ~11 µs wide.
        mouse(&mut app, MouseEventKind::Down(MouseButton::Left), 17, 5);
        assert_eq!(app.selected_rank(), Some(Rank(1)));
        let span = app
            .dash
            .spans
            .span(app.timeline.span.expect("a span"))
            .unwrap();
        assert_eq!(app.dash.spans.name(span.name), "all_reduce");
        let row = app.span_row.clone().unwrap().unwrap();
        assert_eq!(row.rank, Rank(1));
        let whole = app.timeline.width_ns;
        let at = |app: &App, x: u16| match crate::view::hit(app, Rect::new(0, 0, 100, 30), x, 5) {
            Hit::Timeline { from_ns, .. } => from_ns,
            other => panic!("{other:?}"),
        };
        let before = at(&app, 40);
        mouse(&mut app, MouseEventKind::ScrollUp, 40, 5);
        assert_eq!(app.timeline.width_ns, (whole as f64 * 0.8) as i64);
        assert!((at(&app, 40) - before).abs() < app.timeline.width_ns / 90);
        // Outside the rows the wheel does nothing.
        mouse(&mut app, MouseEventKind::ScrollUp, 40, 29);
        assert_eq!(app.timeline.width_ns, (whole as f64 * 0.8) as i64);
    }

    #[test]
    fn the_wheel_moves_a_lists_selection() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('3'));
        mouse(&mut app, MouseEventKind::ScrollDown, 10, 5);
        assert_eq!(app.finding, 1);
        mouse(&mut app, MouseEventKind::ScrollUp, 10, 5);
        assert_eq!(app.finding, 0);
    }

    #[test]
    fn arrows_move_the_overview_and_ops_selections_within_their_lists() {
        let mut app = App::new(dashboard());
        for _ in 0..9 {
            press(&mut app, KeyCode::Down);
        }
        assert_eq!(app.overview_rank, 3, "four ranks");
        press(&mut app, KeyCode::Up);
        press(&mut app, KeyCode::Enter);
        assert_eq!(
            (app.view, app.selected_rank()),
            (View::Timeline, Some(Rank(2)))
        );
        press(&mut app, KeyCode::Char('4'));
        press(&mut app, KeyCode::End);
        assert_eq!(app.ops_row, 3);
        press(&mut app, KeyCode::PageUp);
        assert_eq!(app.ops_row, 0);
    }

    #[test]
    fn a_finding_with_stretches_jumps_to_the_first_and_f_walks_them() {
        let mut app = App::new(dashboard());
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Char('t'));
        let stretches = app.dash.findings[0].stretches.clone();
        let middle = |app: &App| app.timeline.start_ns + app.timeline.width_ns / 2;
        // The first stretch fills the middle third of the view.
        assert_eq!(app.timeline.width_ns, 6_000);
        assert_eq!(middle(&app), stretches[0].start_ns + 1_000);
        // Rank 3's row, and its first span that ends after the others began to wait: the
        // all-reduce it arrived late at.
        assert_eq!(app.selected_rank(), Some(Rank(3)));
        let span = app.dash.spans.span(app.timeline.span.unwrap()).unwrap();
        assert_eq!(app.dash.spans.name(span.name), "all_reduce");
        assert_eq!(span.start_ns, stretches[0].start_ns + 2_000);
        press(&mut app, KeyCode::Char('f'));
        assert_eq!(middle(&app), stretches[1].start_ns + 1_000);
        for _ in 1..stretches.len() {
            press(&mut app, KeyCode::Char('f'));
        }
        assert_eq!(
            middle(&app),
            stretches[0].start_ns + 1_000,
            "after the last, the first"
        );
    }
}
