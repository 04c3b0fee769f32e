//! The terminal dashboard (ratatui): live and replayed runs, rendered from state and nothing else.
//!
//! Empty until the dashboard issue: it will render the analyzer's report and timeline, never
//! reading node logs itself.
