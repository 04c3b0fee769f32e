//! The terminal dashboard (ratatui): a recorded run (`pinch tui RUN`) or one in progress
//! (`pinch run --tui`), in six views: overview, timeline, findings, ops, communication,
//! serving.
//!
//! Split as tokio-console is: `state` (what is known: a `Dashboard` built from the analyzer's
//! report and timeline), `app` (how the user looks at it, and what keys do), `view` (drawing,
//! which reads the app and never changes it), `source` (where dashboards come from: a recorded
//! run or a live channel, behind one trait) and `term` (the terminal and the event loop). The
//! dashboard never reads node logs itself.

pub mod app;
pub mod source;
pub mod state;
pub mod term;
pub mod view;

#[cfg(test)]
mod testkit;

pub use app::{App, View};
pub use source::{Live, LiveSender, Replay, Source, SourceEvent};
pub use state::{Dashboard, Details};
