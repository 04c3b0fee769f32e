//! The terminal session: takes the screen (raw mode, alternate screen, the mouse), runs the loop
//! of wait for a key, a click, a resize or the source's news and draw what changed, and gives
//! the screen back on every way out, a panic included.
//!
//! The loop never blocks on I/O while drawing: keys are polled with a timeout and the source
//! is asked without waiting (`Source::poll`), so a slow producer only makes news late.

use crate::app::App;
use crate::source::{Source, SourceEvent};
use crate::view;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind,
};
use ratatui::crossterm::execute;
use ratatui::layout::Rect;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How long the loop waits for a key before asking the source again.
const TICK: Duration = Duration::from_millis(100);

/// The panic hook in place before the dashboard added its own.
type Hook = Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync>;

/// Runs the dashboard on this terminal until the user quits.
pub fn run(app: App, source: &mut dyn Source) -> io::Result<App> {
    // ratatui::init sets raw mode and the alternate screen, and installs a panic hook that
    // restores the terminal before the panic message prints; the mouse is ours to give back.
    let mut terminal = ratatui::init();
    let before: Hook = Arc::from(std::panic::take_hook());
    let chained = Arc::clone(&before);
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(io::stdout(), DisableMouseCapture);
        chained(info);
    }));
    let result = execute!(io::stdout(), EnableMouseCapture)
        .and_then(|()| event_loop(&mut terminal, app, source));
    let _ = execute!(io::stdout(), DisableMouseCapture);
    ratatui::restore();
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| before(info)));
    result
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    mut app: App,
    source: &mut dyn Source,
) -> io::Result<App> {
    // Drawing only after something changed keeps an idle dashboard off the cores a live run
    // saturates: a frame costs milliseconds, the wake-up to look for news microseconds.
    let mut changed = true;
    loop {
        if changed {
            terminal.draw(|frame| view::render(&app, frame))?;
            changed = false;
        }
        if app.quit {
            return Ok(app);
        }
        if event::poll(TICK)? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    app.key(key);
                    changed = true;
                }
                Event::Mouse(mouse) => {
                    let size = terminal.size()?;
                    app.mouse(mouse, Rect::new(0, 0, size.width, size.height));
                    changed = true;
                }
                // The next draw takes the new size.
                Event::Resize(..) => changed = true,
                _ => {}
            }
        }
        while let Some(news) = source.poll() {
            match news {
                SourceEvent::Update(dash) => app.update(*dash),
                SourceEvent::Finished(dash) => {
                    app.update(*dash);
                    app.dash.live = false;
                }
            }
            changed = true;
        }
    }
}
