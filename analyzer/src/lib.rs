//! The analyzer: merges a run's node logs into one timeline and names what holds the run back.
//!
//! Layering: `load` is the only module that touches the file system; it turns a run directory
//! into `RunData`. Everything else is pure: `timeline::merge` puts every node on one time base
//! (`align` refines the clock anchors with collective completions), `analysis`, `breakdown`,
//! `collectives` and `stragglers` measure it, `findings` judges it, and `report::analyze` glues
//! them into the `Report` written as `report.json`.

pub mod align;
pub mod analysis;
pub mod breakdown;
pub mod collectives;
pub mod critical_path;
pub mod error;
mod exchanges;
pub mod export;
pub mod facts;
pub mod findings;
mod frames;
pub mod hta;
pub mod idle;
pub mod imbalance;
pub mod intervals;
pub mod kineto_timeline;
pub mod load;
pub mod phases;
pub mod report;
pub mod roofline;
pub mod run;
pub mod serving;
pub mod span_columns;
pub mod stats;
pub mod store;
pub mod stored;
pub mod stragglers;
pub mod timeline;
pub mod traffic;

#[cfg(test)]
mod testkit;

pub use align::{Alignment, ClockMethod, NodeClockReport};
pub use analysis::{AnalysisInput, ExitReport, OpReport, RankReport};
pub use breakdown::{BreakdownNs, BreakdownPct};
pub use collectives::{CollectiveReport, LinkCeiling};
pub use critical_path::{
    CriticalPathReport, PathCategory, PathCategoryShare, PathOpShare, PathRankShare, PathSegment,
    StepPath, critical_path,
};
pub use error::AnalyzerError;
pub use export::{ExportLayout, ExportSummary, export_run, trace_header};
pub use facts::{Problem, ProblemKind, RunFacts};
pub use findings::{
    Detector, Finding, FindingKind, Level, Location, all_detectors, detect_all, detect_with,
};
pub use idle::{IdleBreakdownNs, IdleOps, idle_breakdown};
pub use imbalance::{
    ExpertImbalance, ExpertLoad, ImbalanceReport, LayerExpertLoad, RankExpertLoad,
    ReplicaImbalance, ReplicaLoad, Spread, StageBubble, imbalance_report,
};
pub use load::load_run;
pub use phases::{NodePhase, PhaseKind, PhaseReport, Stretch};
pub use report::{
    CounterSourceReport, NodeReport, REPORT_SCHEMA_VERSION, Report, RunInfo, analyze, report_from,
    report_with_clocks,
};
pub use roofline::{Ceilings, OpRoofline, RooflineClass};
pub use run::{LogState, NodeData, RankLife, RunData};
pub use serving::{
    Goodput, LatencyStats, OUTPUT_RATE_BINS, OutputRate, ReplicaServing, ServingReport, Slo,
    SloError, serving_report,
};
pub use span_columns::{ColumnsError, SpanColumns, SpanTrack, SpanView};
pub use store::{
    Rewrite, StoreError, StoredTable, TablesOutcome, analyze_and_store, analyze_run, store_tables,
};
pub use stored::{SpanRow, read_series, read_span_columns, read_span_row, stored_current};
pub use stragglers::{
    RankLateness, SeqLateness, StragglerReport, lateness_by_seq, straggler_report,
};
pub use timeline::{
    NameId, Series, TimedSpan, Timeline, merge, merge_taking_spans, merge_with, node_clocks,
};
pub use traffic::{
    AllReduceAlgorithm, CommSettings, LinkTraffic, PairTraffic, TrafficReport, traffic_report,
};
