//! View 6: the serving latencies (TTFT, TPOT, ITL, end to end: mean and percentiles, as vLLM
//! defines them), the throughputs, and output tokens per second over the run.

use super::dim;
use crate::app::App;
use crate::state::Serving;
use pinch_analyzer::LatencyStats;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(serving) = &app.dash.serving else {
        let text = "This run served no requests: no serving metrics.";
        frame.render_widget(
            Paragraph::new(text).style(dim()).block(Block::bordered()),
            area,
        );
        return;
    };
    let [latency, rates, over_time] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(area);
    render_latencies(serving, frame, latency);
    render_rates(serving, frame, rates);
    let peak = serving.tokens_per_s.iter().copied().max();
    let title = match (peak, serving.bin_ns) {
        (Some(max), Some(bin_ns)) => format!(
            " output tokens per second over the run, bins of {} (peak {max}/s) ",
            super::duration(bin_ns)
        ),
        _ => " output tokens per second over the run: not in this report ".to_string(),
    };
    let spark = Sparkline::default()
        .data(&serving.tokens_per_s)
        .style(Style::new().fg(Color::Green))
        .block(Block::bordered().title(title));
    frame.render_widget(spark, over_time);
}

fn ms(value: f64) -> String {
    format!("{value:.2} ms")
}

fn render_latencies(serving: &Serving, frame: &mut Frame, area: Rect) {
    let r = &serving.report;
    let metrics: [(&str, &Option<LatencyStats>); 4] = [
        ("TTFT", &r.ttft),
        ("TPOT", &r.tpot),
        ("ITL", &r.itl),
        ("end to end", &r.e2e),
    ];
    let rows = metrics.iter().map(|(name, stats)| {
        let cells = match stats {
            Some(s) => vec![ms(s.mean_ms), ms(s.median_ms), ms(s.p90_ms), ms(s.p99_ms)],
            None => vec!["-".to_string(); 4],
        };
        Row::new(std::iter::once(Cell::from(*name)).chain(cells.into_iter().map(Cell::from)))
    });
    let header =
        Row::new(["latency", "mean", "median", "p90", "p99"]).style(Style::new().fg(Color::Cyan));
    let widths = [
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(12),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(format!(" {} requests ", r.requests)));
    frame.render_widget(table, area);
}

fn render_rates(serving: &Serving, frame: &mut Frame, area: Rect) {
    let r = &serving.report;
    let rate = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.1} {unit}"));
    let lines = vec![
        format!(
            "requests {}  prompt tokens {}  output tokens {}  preemptions {}",
            r.requests, r.prompt_tokens, r.output_tokens, r.preemptions
        ),
        format!(
            "throughput: {}, {} output, {} total",
            rate(r.request_throughput_per_s, "requests/s"),
            rate(r.output_token_throughput_per_s, "tokens/s"),
            rate(r.total_token_throughput_per_s, "tokens/s"),
        ),
        match &r.goodput {
            Some(g) => format!(
                "goodput ({}): {} requests met it ({:.0}%), {}",
                g.slo,
                g.requests,
                g.fraction * 100.0,
                rate(g.requests_per_s, "requests/s")
            ),
            None => "goodput: no SLO given".to_string(),
        },
    ];
    let text: Vec<ratatui::text::Line> = lines.into_iter().map(ratatui::text::Line::raw).collect();
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" throughput ")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use crate::app::{App, View};
    use crate::testkit::{dashboard, screen};

    #[test]
    fn serving() {
        let mut app = App::new(dashboard());
        app.view = View::Serving;
        insta::assert_snapshot!(screen(&app, 100, 24));
    }
}
