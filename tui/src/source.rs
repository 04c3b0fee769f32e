//! Where the dashboard's data comes from, behind one interface: a recorded run gives its one
//! dashboard up front and nothing after; a live run (and, later, the multi-node coordinator)
//! sends newer dashboards over a channel as the run goes, then a last one when it ends.

use crate::state::Dashboard;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

/// News from a source.
#[derive(Debug)]
pub enum SourceEvent {
    /// A newer dashboard of the run in progress.
    Update(Box<Dashboard>),
    /// The run ended: its final dashboard.
    Finished(Box<Dashboard>),
}

/// A source of dashboards; `poll` never waits.
pub trait Source {
    /// The next news, if any came since the last call.
    fn poll(&mut self) -> Option<SourceEvent>;
}

/// A recorded run: no news after the dashboard the app starts with.
#[derive(Debug, Default)]
pub struct Replay;

impl Source for Replay {
    fn poll(&mut self) -> Option<SourceEvent> {
        None
    }
}

/// A run in progress: dashboards arrive from the producer's thread.
#[derive(Debug)]
pub struct Live {
    news: Receiver<SourceEvent>,
    ended: bool,
}

/// The producer's end of a live source.
pub type LiveSender = Sender<SourceEvent>;

impl Live {
    pub fn new() -> (LiveSender, Live) {
        let (tx, news) = channel();
        (tx, Live { news, ended: false })
    }
}

impl Source for Live {
    fn poll(&mut self) -> Option<SourceEvent> {
        if self.ended {
            return None;
        }
        match self.news.try_recv() {
            Ok(news) => Some(news),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::dashboard;

    #[test]
    fn a_live_source_passes_news_in_order_and_never_waits() {
        let (tx, mut live) = Live::new();
        assert!(live.poll().is_none());
        tx.send(SourceEvent::Update(Box::new(dashboard()))).unwrap();
        tx.send(SourceEvent::Finished(Box::new(dashboard())))
            .unwrap();
        drop(tx);
        assert!(matches!(live.poll(), Some(SourceEvent::Update(_))));
        assert!(matches!(live.poll(), Some(SourceEvent::Finished(_))));
        assert!(live.poll().is_none());
        assert!(live.poll().is_none());
    }
}
