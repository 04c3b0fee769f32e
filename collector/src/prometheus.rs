//! A Prometheus endpoint for the agent: the latest reading of every counter of the node, served as
//! OpenMetrics text on `GET /metrics` so a Prometheus server or `curl` can watch a run live.
//!
//! The node log stays the record of a run; this endpoint only shows its last values (a series keeps
//! its last value until the server stops, even after its rank ended). It is not a
//! sampler: the agent hands it the readings its samplers already took (`observe_records`, or
//! `observe` for one value). Exposition is done by the `prometheus-client` crate; the HTTP side is
//! a minimal server on one std thread (request line only, `Connection: close`), because a scrape
//! endpoint needs nothing more and the agent has no async runtime.
//!
//! The endpoint has no authentication, so it only listens on a loopback address; reach it from
//! elsewhere through an SSH tunnel.
//!
//! # Names
//!
//! Each counter becomes one gauge family: `pinch_` + the counter name with every character that
//! Prometheus does not allow in a name (dots included) turned into `_`, + the unit's suffix. Values
//! are converted to the base units Prometheus asks for:
//!
//! | pinch unit     | suffix              | value                 |
//! |----------------|---------------------|-----------------------|
//! | percent        | `_ratio`            | divided by 100 (0..1) |
//! | bytes          | `_bytes`            | as is                 |
//! | bytes/s        | `_bytes_per_second` | as is                 |
//! | 1/s            | `_per_second`       | as is                 |
//! | nanoseconds    | `_seconds`          | divided by 1e9        |
//! | Hz             | `_hertz`            | as is                 |
//! | W              | `_watts`            | as is                 |
//! | °C             | `_celsius`          | as is                 |
//! | ratio          | `_ratio`            | as is                 |
//! | count          | none                | as is                 |
//!
//! A suffix is not repeated when the name already ends with its first words: `net.rx_bytes` in
//! bytes/s is `pinch_net_rx_bytes_per_second`. Every value is a gauge (the last reading), so no
//! name ends in `_total`. Two counter names that differ only in characters turned into `_` share
//! one family.
//!
//! Labels: `node` (the agent's node id) on every series, `device` (the sampler's device name:
//! `cpu3`, `eth0`, `host`, `gpu0`, `rank1`) and, where the device is a rank, `rank` (its number).
//!
//! # GPU counters and dcgm-exporter
//!
//! NVIDIA's dcgm-exporter names GPU metrics after DCGM field ids and keeps DCGM's units (percent,
//! MiB, MHz). pinch keeps Prometheus base units instead, so dashboards built on dcgm-exporter need
//! a scale factor. The NVML sampler's counters map as follows:
//!
//! | pinch counter     | pinch metric                       | dcgm-exporter metric (unit)          |
//! |-------------------|------------------------------------|--------------------------------------|
//! | `gpu.utilization` | `pinch_gpu_utilization_ratio`      | `DCGM_FI_DEV_GPU_UTIL` (%)           |
//! | `gpu.memory_used` | `pinch_gpu_memory_used_bytes`      | `DCGM_FI_DEV_FB_USED` (MiB)          |
//! | `gpu.power`       | `pinch_gpu_power_watts`            | `DCGM_FI_DEV_POWER_USAGE` (W)        |
//! | `gpu.temperature` | `pinch_gpu_temperature_celsius`    | `DCGM_FI_DEV_GPU_TEMP` (°C)          |
//! | `gpu.sm_clock`    | `pinch_gpu_sm_clock_hertz`         | `DCGM_FI_DEV_SM_CLOCK` (MHz)         |
//!
//! dcgm-exporter's `gpu` label (the GPU index) is pinch's `device` label (`gpu0`).

use pinch_traces::{CounterDef, CounterId, DeviceId, NodeId, Record, Unit};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{self, Registry};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The content type of the crate's text encoding.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request head longer than this is refused: a scrape sends a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long one client may take to send its request or read the answer, so a stalled client
/// cannot stop the endpoint for long (the server answers one connection at a time).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics address '{addr}' is not loopback")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen for metrics on '{addr}': {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the metrics server thread: {source}")]
    Thread { source: io::Error },
}

/// One gauge per (device, rank) of one counter.
type GaugeFamily = Family<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>>;

/// A counter's family and the factor from its pinch unit to the exposed one.
#[derive(Debug, Clone)]
struct Exposed {
    family: GaugeFamily,
    scale: f64,
}

/// What the endpoint shows, and the names behind a node log's ids.
#[derive(Debug)]
struct State {
    registry: Registry,
    /// By exposed name (without prefix), so colliding counter names share one family.
    families: HashMap<String, Exposed>,
    counters: HashMap<CounterId, CounterDef>,
    devices: HashMap<DeviceId, String>,
}

/// A running `/metrics` endpoint; stops and closes its port when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    state: Arc<Mutex<State>>,
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (loopback only; port 0 picks a free port) and serves node `node`'s
    /// latest readings on `GET /metrics`.
    pub fn start(addr: SocketAddr, node: NodeId) -> Result<MetricsServer, MetricsError> {
        if !addr.ip().is_loopback() {
            return Err(MetricsError::NotLoopback { addr });
        }
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let state = Arc::new(Mutex::new(State::new(node)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("pinch-metrics".to_string())
            .spawn({
                let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
                move || serve(&listener, &state, &stop)
            })
            .map_err(|source| MetricsError::Thread { source })?;
        Ok(MetricsServer {
            state,
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port picked when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets the latest value of `counter` on `device`. A non-finite value is not a reading and
    /// is left out, so the series keeps its last real value.
    pub fn observe(&self, counter: &str, unit: Unit, device: &str, value: f64) {
        self.lock().observe(counter, unit, device, value);
    }

    /// Takes the counter and device definitions and the readings among a node log's records
    /// (as `SampleSink::take_records` makes them); other records are ignored. Definitions must
    /// come before the samples that use them, as they do in a node log.
    pub fn observe_records(&self, records: &[Record]) {
        let mut state = self.lock();
        for record in records {
            state.take_record(record);
        }
    }

    /// The text a scrape gets now.
    pub fn render(&self) -> String {
        self.lock().render()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: at worst one gauge
        // misses one update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked `accept` with a connection of our own. If even that fails, leave the
        // thread detached rather than hang the agent's exit on it.
        let woke = TcpStream::connect_timeout(&self.local_addr, CLIENT_TIMEOUT).is_ok();
        if let (true, Some(thread)) = (woke, self.thread.take()) {
            let _ = thread.join();
        }
    }
}

impl State {
    fn new(node: NodeId) -> State {
        let node_label = (Cow::Borrowed("node"), Cow::Owned(node.0.to_string()));
        State {
            registry: Registry::with_prefix_and_labels("pinch", std::iter::once(node_label)),
            families: HashMap::new(),
            counters: HashMap::new(),
            devices: HashMap::new(),
        }
    }

    fn take_record(&mut self, record: &Record) {
        match record {
            Record::Counter(def) => {
                self.counters.insert(def.id, def.clone());
            }
            Record::Device(def) => {
                self.devices.insert(def.id, def.name.clone());
            }
            Record::Samples(samples) => {
                for sample in samples {
                    let counter = self.counters.get(&sample.counter).cloned();
                    let device = self.devices.get(&sample.device).cloned();
                    // A sample whose definitions were never seen cannot be named; skip it.
                    if let (Some(counter), Some(device)) = (counter, device) {
                        self.observe(&counter.name, counter.unit, &device, sample.value);
                    }
                }
            }
            _ => {}
        }
    }

    fn observe(&mut self, counter: &str, unit: Unit, device: &str, value: f64) {
        if !value.is_finite() {
            return;
        }
        let exposed = self.family(counter, unit);
        exposed
            .family
            .get_or_create(&series_labels(device))
            .set(value * exposed.scale);
    }

    /// The family of `counter`, registered on first use.
    fn family(&mut self, counter: &str, unit: Unit) -> Exposed {
        let (base, suffix, scale) = exposition(counter, unit);
        let key = match &suffix {
            Some(suffix) => format!("{base}_{suffix}"),
            None => base.clone(),
        };
        if let Some(exposed) = self.families.get(&key) {
            return exposed.clone();
        }
        let exposed = Exposed {
            family: GaugeFamily::default(),
            scale,
        };
        let help = help_text(counter, unit, suffix.as_deref());
        match suffix {
            Some(suffix) => self.registry.register_with_unit(
                base,
                help,
                registry::Unit::Other(suffix),
                exposed.family.clone(),
            ),
            None => self.registry.register(base, help, exposed.family.clone()),
        }
        self.families.insert(key, exposed.clone());
        exposed
    }

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail, and the registry holds only our gauges.
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// The exposed base name (without the `pinch_` prefix and unit), the unit suffix, and the factor
/// from the pinch unit to the exposed one.
fn exposition(counter: &str, unit: Unit) -> (String, Option<String>, f64) {
    let (suffix, scale) = match unit {
        Unit::Percent => (Some("ratio"), 0.01),
        Unit::Bytes => (Some("bytes"), 1.0),
        Unit::BytesPerSecond => (Some("bytes_per_second"), 1.0),
        Unit::PerSecond => (Some("per_second"), 1.0),
        Unit::Nanoseconds => (Some("seconds"), 1e-9),
        Unit::Count => (None, 1.0),
        Unit::Hertz => (Some("hertz"), 1.0),
        Unit::Watts => (Some("watts"), 1.0),
        Unit::Celsius => (Some("celsius"), 1.0),
        Unit::Ratio => (Some("ratio"), 1.0),
    };
    let mut name = metric_name(counter);
    // pinch names some rates `..._per_s`; the unit suffix says it already.
    if suffix == Some("per_second")
        && let Some(stem) = name.strip_suffix("_per_s")
    {
        name = stem.to_string();
    }
    match suffix {
        Some(suffix) => {
            let (base, suffix) = split_shared_words(&name, suffix);
            (base, Some(suffix), scale)
        }
        None => (name, None, scale),
    }
}

/// Says which pinch counter a family shows, and in which unit pinch reads it when the value
/// shown is converted (percent to ratio, nanoseconds to seconds).
fn help_text(counter: &str, unit: Unit, suffix: Option<&str>) -> String {
    let converted = matches!(unit, Unit::Percent | Unit::Nanoseconds);
    match (suffix, converted) {
        (Some(suffix), true) => {
            format!(
                "Latest reading of pinch counter '{counter}', read in {unit} and shown in {suffix}"
            )
        }
        _ => format!("Latest reading of pinch counter '{counter}' ({unit})"),
    }
}

/// `counter` as a Prometheus name: letters, digits and `_` only, not starting with a digit.
fn metric_name(counter: &str) -> String {
    let mut name: String = counter
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Moves the words `name` ends with that `suffix` starts with from the name to the suffix, so
/// they are written once: ("net_rx_bytes", "bytes_per_second") is ("net_rx", "bytes_per_second").
fn split_shared_words(name: &str, suffix: &str) -> (String, String) {
    let name_words: Vec<&str> = name.split('_').collect();
    let suffix_words: Vec<&str> = suffix.split('_').collect();
    // Keep at least one word of the name, so "bytes" in bytes is "bytes_bytes", not "".
    let most = suffix_words.len().min(name_words.len() - 1);
    let shared = (1..=most)
        .rev()
        .find(|&k| name_words[name_words.len() - k..] == suffix_words[..k])
        .unwrap_or(0);
    let base = name_words[..name_words.len() - shared].join("_");
    (base, suffix.to_string())
}

/// The labels of one series: its device, and its rank where the device is one (`rank3`).
fn series_labels(device: &str) -> Vec<(&'static str, String)> {
    let mut labels = vec![("device", device.to_string())];
    if let Some(rank) = device
        .strip_prefix("rank")
        .and_then(|n| n.parse::<u32>().ok())
    {
        labels.push(("rank", rank.to_string()));
    }
    labels
}

/// Answers connections one at a time until `stop` is set.
fn serve(listener: &TcpListener, state: &Mutex<State>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // A failed accept or a client that goes away concerns that client only.
        if let Ok(stream) = stream {
            let _ = answer(stream, state);
        }
    }
}

/// Reads one request and writes one response, then closes the connection.
fn answer(mut stream: TcpStream, state: &Mutex<State>) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = match route(&head) {
        Route::Metrics { with_body } => {
            let body = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .render();
            response("200 OK", CONTENT_TYPE, &body, with_body)
        }
        Route::Error(status) => response(status, "text/plain; charset=utf-8", status, true),
    };
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The request up to its blank line (or what came before the client stopped sending).
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { with_body: bool },
    Error(&'static str),
}

/// What a request head asks for; only its request line is read.
fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Error("400 Bad Request");
    };
    if !version.starts_with("HTTP/") {
        return Route::Error("400 Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { with_body: true },
        ("HEAD", "/metrics") => Route::Metrics { with_body: false },
        (_, "/metrics") => Route::Error("405 Method Not Allowed"),
        _ => Route::Error("404 Not Found"),
    }
}

fn response(status: &str, content_type: &str, body: &str, with_body: bool) -> String {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        text.push_str(body);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_traces::{CounterSample, DeviceDef};

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Sends `request` and returns the whole response.
    fn fetch(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        fetch(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let name = |counter, unit| {
            let (base, suffix, _) = exposition(counter, unit);
            match suffix {
                Some(s) => format!("{base}_{s}"),
                None => base,
            }
        };
        assert_eq!(
            name("cpu.utilization", Unit::Percent),
            "cpu_utilization_ratio"
        );
        assert_eq!(name("mem.available", Unit::Bytes), "mem_available_bytes");
        assert_eq!(
            name("gpu.memory_used", Unit::Bytes),
            "gpu_memory_used_bytes"
        );
        assert_eq!(
            name("net.rx_bytes", Unit::BytesPerSecond),
            "net_rx_bytes_per_second"
        );
        assert_eq!(
            name("net.rx_packets", Unit::PerSecond),
            "net_rx_packets_per_second"
        );
        assert_eq!(
            name("process.cpu_time", Unit::Nanoseconds),
            "process_cpu_time_seconds"
        );
        assert_eq!(name("gpu.mem-bw", Unit::Count), "gpu_mem_bw");
        assert_eq!(name("bytes", Unit::Bytes), "bytes_bytes");
        assert_eq!(name("2x", Unit::Count), "_2x");
    }

    #[test]
    fn rank_devices_get_a_rank_label() {
        assert_eq!(
            series_labels("rank12"),
            vec![("device", "rank12".to_string()), ("rank", "12".to_string())]
        );
        assert_eq!(
            series_labels("ranked"),
            vec![("device", "ranked".to_string())]
        );
    }

    #[test]
    fn scrape_shows_latest_values_with_labels_and_metadata() {
        let server = MetricsServer::start(local(), NodeId(3)).unwrap();
        server.observe("cpu.utilization", Unit::Percent, "cpu0", 10.0);
        server.observe("cpu.utilization", Unit::Percent, "cpu0", 50.0);
        server.observe("process.rss", Unit::Bytes, "rank1", 4096.0);
        server.observe("process.cpu_time", Unit::Nanoseconds, "rank1", 2.5e9);
        server.observe("mem.available", Unit::Bytes, "host", f64::NAN);
        let response = get(server.local_addr(), "/metrics");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: application/openmetrics-text"),
            "{head}"
        );
        for line in [
            "# HELP pinch_cpu_utilization_ratio Latest reading of pinch counter 'cpu.utilization', read in % and shown in ratio.",
            "# HELP pinch_process_rss_bytes Latest reading of pinch counter 'process.rss' (B).",
            "# TYPE pinch_cpu_utilization_ratio gauge",
            "# UNIT pinch_cpu_utilization_ratio ratio",
            "pinch_cpu_utilization_ratio{node=\"3\",device=\"cpu0\"} 0.5",
            "# TYPE pinch_process_rss_bytes gauge",
            "pinch_process_rss_bytes{node=\"3\",device=\"rank1\",rank=\"1\"} 4096.0",
            "pinch_process_cpu_time_seconds{node=\"3\",device=\"rank1\",rank=\"1\"} 2.5",
            "# EOF",
        ] {
            assert!(
                body.lines().any(|l| l == line),
                "missing {line:?} in:\n{body}"
            );
        }
        // A non-finite reading is left out, not shown as a value.
        assert!(!body.contains("pinch_mem_available_bytes{"), "{body}");
    }

    #[test]
    fn node_log_records_are_named_through_their_definitions() {
        let server = MetricsServer::start(local(), NodeId(0)).unwrap();
        let sample = |device, counter, value| CounterSample {
            node: NodeId(0),
            device: DeviceId(device),
            counter: CounterId(counter),
            time_ns: 1,
            value,
        };
        server.observe_records(&[
            Record::Counter(CounterDef {
                id: CounterId(0),
                name: "net.rx_bytes".to_string(),
                unit: Unit::BytesPerSecond,
            }),
            Record::Device(DeviceDef {
                id: DeviceId(0),
                name: "eth0".to_string(),
            }),
            // Counter 9 was never defined: it cannot be named and is skipped.
            Record::Samples(vec![sample(0, 0, 1250.0), sample(0, 9, 7.0)]),
        ]);
        let text = server.render();
        assert!(
            text.contains("pinch_net_rx_bytes_per_second{node=\"0\",device=\"eth0\"} 1250.0"),
            "{text}"
        );
        assert!(!text.contains("7.0"), "{text}");
    }

    #[test]
    fn non_loopback_address_is_refused() {
        let err = MetricsServer::start("0.0.0.0:9400".parse().unwrap(), NodeId(0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "metrics address '0.0.0.0:9400' is not loopback"
        );
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let server = MetricsServer::start(local(), NodeId(0)).unwrap();
        let addr = server.local_addr();
        assert!(get(addr, "/").starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(get(addr, "/metricsx").starts_with("HTTP/1.1 404 Not Found\r\n"));
        let post = fetch(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        let junk = fetch(addr, "hello\r\n\r\n");
        assert!(junk.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{junk}");
        let head = fetch(addr, "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn dropping_the_server_closes_its_port() {
        let server = MetricsServer::start(local(), NodeId(0)).unwrap();
        let addr = server.local_addr();
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200 OK"));
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "port {addr} still open");
    }
}
