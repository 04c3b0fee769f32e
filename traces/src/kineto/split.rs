//! One big trace parsed on two threads: its text is cut between two events of `traceEvents`,
//! the head is closed with `]}` and the tail opened with `[`, and the two parse at once; for a
//! gzip file the head is parsed while the tail is still being inflated.
//!
//! A cut is found in the bytes alone (`}`, `,`, white space, `{`), so it may fall inside a
//! nested list or a string; parsing the head tells: it must be a whole trace object whose last
//! key is `traceEvents`. Whatever fails (a bad cut, bad JSON, bad UTF-8) sends the whole text
//! to the one-thread parse, which gives the same trace or the same error as ever.

use super::model::KinetoTrace;
use super::parse;
use flate2::bufread::MultiGzDecoder;
use std::io::{self, Read};

/// Texts shorter than this are parsed on one thread: the second thread would cost more than
/// it saves.
pub const MIN_SPLIT_BYTES: usize = 1 << 20;

/// The head's share of a gzip file's text, in per mille. The head is parsed while the tail is
/// inflated, and inflating costs about a fifth of parsing: with those costs both threads end
/// together when the head gets (1 + 1/5) / (2 + 1/5) of the text.
const GZIP_HEAD_PER_MILLE: usize = 545;

/// How far before the wanted place a cut is looked for (events are a few hundred bytes).
const CUT_SEARCH_BYTES: usize = 1 << 16;

/// What reading produced: a trace, or the whole text for the one-thread parse.
pub enum Loaded {
    Parsed(Box<KinetoTrace>),
    Text(Vec<u8>),
}

/// A place between two events: `}`, `,`, white space, `{`. The head is closed over the comma
/// and the byte after it; the tail is opened with a `[` before the brace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    comma: usize,
    brace: usize,
}

/// Whether this machine has a second core to parse on.
pub fn may_split() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Parses plain JSON text, in two halves when it is big enough.
pub fn parse_plain(text: Vec<u8>) -> Loaded {
    parse_plain_from(text, MIN_SPLIT_BYTES)
}

/// `parse_plain` for texts of at least `min_bytes`.
fn parse_plain_from(mut text: Vec<u8>, min_bytes: usize) -> Loaded {
    let wanted = text.len() / 2;
    let cut = (text.len() >= min_bytes)
        .then(|| find_cut(&text, wanted))
        .flatten();
    let Some(cut) = cut else {
        return Loaded::Text(text);
    };
    // The tail opens in place when the white space has a byte to spare for its `[`.
    let in_place = cut.brace - cut.comma >= 3;
    let copied = (!in_place).then(|| open_tail(&text, cut, text.len()));
    let saved = [text[cut.comma], text[cut.comma + 1], text[cut.brace - 1]];
    close_head(&mut text, cut);
    if in_place {
        text[cut.brace - 1] = b'[';
    }
    let (head, tail) = std::thread::scope(|scope| {
        let head = scope.spawn(|| parse::parse_head(&text[..cut.comma + 2]));
        let tail = parse::parse_tail(copied.as_deref().unwrap_or(&text[cut.brace - 1..]));
        (head.join().ok().flatten(), tail)
    });
    if let (Some(head), Some(tail)) = (head, tail) {
        return Loaded::Parsed(Box::new(parse::join(head, tail)));
    }
    [text[cut.comma], text[cut.comma + 1], text[cut.brace - 1]] = saved;
    Loaded::Text(text)
}

/// The tail's text on its own: `[` and the text from the cut's brace on.
/// `total_bytes`: the length of the whole text, so that the tail can be inflated in place.
fn open_tail(text: &[u8], cut: Cut, total_bytes: usize) -> Vec<u8> {
    let mut tail = text_buffer(total_bytes.max(text.len()) - cut.brace + 1);
    tail.push(b'[');
    tail.extend_from_slice(&text[cut.brace..]);
    tail
}

/// An empty buffer for `bytes` of text. A big one asks the kernel for 2 MiB pages: filling
/// 15 MB of text in 4 KiB pages costs thousands of page faults, as much time as inflating it.
fn text_buffer(bytes: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(bytes);
    if bytes >= HUGE_PAGE_BYTES * 2 {
        advise_huge_pages(&mut buf);
    }
    buf
}

const HUGE_PAGE_BYTES: usize = 2 << 20;

#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut Vec<u8>) {
    const PAGE_BYTES: usize = 4096;
    let start = buf.as_mut_ptr() as usize;
    let first = start.next_multiple_of(PAGE_BYTES);
    let end = (start + buf.capacity()) / PAGE_BYTES * PAGE_BYTES;
    if end > first {
        // SAFETY: the whole pages of the range lie inside the Vec's own allocation, and
        // MADV_HUGEPAGE changes only how the kernel backs them, never what they hold. A
        // kernel that refuses (no transparent huge pages) leaves them as they were.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_buf: &mut Vec<u8>) {}

/// Inflates gzip data whose text is about `size_bytes` long and parses it, the head on a
/// second thread as soon as it is inflated.
pub fn inflate_and_parse(gzip: &[u8], size_bytes: usize) -> io::Result<Loaded> {
    inflate_and_parse_from(gzip, size_bytes, MIN_SPLIT_BYTES / 2)
}

/// `inflate_and_parse` that splits when the head holds at least `min_head_bytes`.
fn inflate_and_parse_from(
    gzip: &[u8],
    size_bytes: usize,
    min_head_bytes: usize,
) -> io::Result<Loaded> {
    let mut decoder = MultiGzDecoder::new(gzip);
    let head_bytes = size_bytes.saturating_mul(GZIP_HEAD_PER_MILLE) / 1000;
    let mut head = text_buffer(head_bytes);
    head.resize(head_bytes, 0);
    let filled = fill(&mut decoder, &mut head)?;
    let cut = (filled == head.len() && filled >= min_head_bytes)
        .then(|| find_cut(&head, filled))
        .flatten();
    let Some(cut) = cut else {
        head.truncate(filled);
        decoder.read_to_end(&mut head)?;
        return Ok(Loaded::Text(head));
    };
    let mut tail = open_tail(&head, cut, size_bytes);
    let saved = [head[cut.comma], head[cut.comma + 1]];
    close_head(&mut head, cut);
    let (head_part, inflated, tail_part) = std::thread::scope(|scope| {
        let head_part = scope.spawn(|| parse::parse_head(&head[..cut.comma + 2]));
        let inflated = decoder.read_to_end(&mut tail);
        let tail_part = inflated.is_ok().then(|| parse::parse_tail(&tail)).flatten();
        (head_part.join().ok().flatten(), inflated, tail_part)
    });
    inflated?;
    if let (Some(head_part), Some(tail_part)) = (head_part, tail_part) {
        return Ok(Loaded::Parsed(Box::new(parse::join(head_part, tail_part))));
    }
    [head[cut.comma], head[cut.comma + 1]] = saved;
    head.truncate(cut.brace);
    head.extend_from_slice(&tail[1..]);
    Ok(Loaded::Text(head))
}

/// For fuzzing: reads `text` as plain JSON, and `gzip` (its gzipped form) as a gzip file, each
/// split in two however short. Returns the traces the split parses gave, none where they fell
/// back to the one-thread parse; the caller compares them with `parse_trace`'s.
#[doc(hidden)]
pub fn split_parses_for_fuzzing(text: &[u8], gzip: &[u8]) -> Vec<KinetoTrace> {
    let mut traces = Vec::new();
    if let Loaded::Parsed(trace) = parse_plain_from(text.to_vec(), 0) {
        traces.push(*trace);
    }
    if let Ok(Loaded::Parsed(trace)) = inflate_and_parse_from(gzip, text.len(), 0) {
        traces.push(*trace);
    }
    traces
}

/// Ends the head text right after the cut's first event: `...}]}`.
fn close_head(text: &mut [u8], cut: Cut) {
    text[cut.comma] = b']';
    text[cut.comma + 1] = b'}';
}

/// Reads until `buf` is full or the data ends; how many bytes were read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(free) = buf.get_mut(filled..).filter(|b| !b.is_empty()) {
        match reader.read(free) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The last cut that ends before `before`, looked for in the bytes just before it.
fn find_cut(text: &[u8], before: usize) -> Option<Cut> {
    let end = before.min(text.len());
    let start = end.saturating_sub(CUT_SEARCH_BYTES);
    let mut braces = text[start..end]
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'{');
    braces.find_map(|(at, _)| cut_at(text, start + at))
}

/// The cut whose second event opens at `brace`, if the bytes around it make one. The brace
/// must open an object's first key (`{"ph"`); inside a string it would read `{\"`.
fn cut_at(text: &[u8], brace: usize) -> Option<Cut> {
    let key = first_non_space(text.get(brace + 1..)?)?;
    let comma = last_non_space(&text[..brace])?;
    if text[brace + 1 + key] != b'"' || text[comma] != b',' || brace - comma < 2 {
        return None;
    }
    let close = last_non_space(&text[..comma])?;
    (text[close] == b'}').then_some(Cut { comma, brace })
}

fn first_non_space(text: &[u8]) -> Option<usize> {
    text.iter()
        .position(|b| !parse::is_json_space(char::from(*b)))
}

fn last_non_space(text: &[u8]) -> Option<usize> {
    text.iter()
        .rposition(|b| !parse::is_json_space(char::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kineto::parse::parse_trace;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// A trace of `n` events in Kineto's layout, with metadata before and after the events.
    fn big_trace(n: usize) -> String {
        let mut text = String::from(
            "{\n  \"schemaVersion\": 1,\n  \"deviceProperties\": [\n    {\"id\": 0},\n    {\"id\": 1}\n  ],\n  \"traceEvents\": [\n",
        );
        for i in 0..n {
            let (cat, args) = match i % 3 {
                0 => (
                    "kernel",
                    format!(
                        "\"stream\": {}, \"correlation\": {i}, \"In msg nelems\": {i}, \"dtype\": \"Float\", \"Process Group Name\": \"{}\"",
                        7 + i % 2,
                        i % 5
                    ),
                ),
                1 => ("cuda_runtime", format!("\"correlation\": {i}")),
                _ => (
                    "cpu_op",
                    format!(
                        "\"External id\": {i}, \"list\": [{{\"a\": 1}}, {{\"b\": \"}},  {{x\"}}]"
                    ),
                ),
            };
            let sep = if i + 1 == n { "" } else { "," };
            text.push_str(&format!(
                "  {{\n    \"ph\": \"X\", \"cat\": \"{cat}\", \"name\": \"op{}\", \"ts\": {}, \"dur\": 3,\n    \"args\": {{{args}}}\n  }}{sep}\n",
                i % 97,
                1000 + i
            ));
        }
        text.push_str("  ],\n  \"distributedInfo\": {\"rank\": 2, \"world_size\": 4},\n  \"traceName\": \"x\"\n}\n");
        text
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(text.as_bytes()).expect("gzip");
        enc.finish().expect("gzip")
    }

    fn one_thread(text: &str) -> KinetoTrace {
        parse_trace(text.as_bytes()).expect("parses")
    }

    fn assert_same(a: &KinetoTrace, b: &KinetoTrace) {
        assert_eq!(
            a.names.iter().collect::<Vec<_>>(),
            b.names.iter().collect::<Vec<_>>()
        );
        assert_eq!(a.streams, b.streams);
        assert_eq!(a.cpu_ops, b.cpu_ops);
        assert_eq!(a.runtime, b.runtime);
        assert_eq!(a.flows, b.flows);
        assert_eq!(a.comm_args, b.comm_args);
        assert_eq!(a.groups, b.groups);
        assert_eq!(a.skipped, b.skipped);
        assert_eq!(
            (a.rank, a.world_size, &a.backend),
            (b.rank, b.world_size, &b.backend)
        );
    }

    #[test]
    fn two_halves_make_the_trace_one_pass_makes() {
        let text = big_trace(12_000);
        assert!(text.len() > MIN_SPLIT_BYTES, "{}", text.len());
        let want = one_thread(&text);
        match parse_plain(text.clone().into_bytes()) {
            Loaded::Parsed(got) => assert_same(&got, &want),
            Loaded::Text(_) => panic!("plain text was not split"),
        }
        match inflate_and_parse(&gzip(&text), text.len()).expect("inflates") {
            Loaded::Parsed(got) => assert_same(&got, &want),
            Loaded::Text(_) => panic!("gzip text was not split"),
        }
        assert_eq!(want.rank.map(|r| r.0), Some(2));
    }

    /// HTA's test traces (../shared/kineto), when present: every big one is split, and gives
    /// what the one-thread parse gives.
    #[test]
    fn real_traces_are_split_and_read_as_in_one_pass() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kineto/traces");
        let Ok(sets) = std::fs::read_dir(&root) else {
            eprintln!("skipped: {} is absent", root.display());
            return;
        };
        let mut split = 0;
        for file in sets.flatten().flat_map(|set| walk(&set.path())) {
            let gz = std::fs::read(&file).expect("readable");
            let mut text = Vec::new();
            MultiGzDecoder::new(gz.as_slice())
                .read_to_end(&mut text)
                .expect("gzip");
            let Ok(want) = parse_trace(&text) else {
                continue;
            };
            if text.len() < MIN_SPLIT_BYTES {
                continue;
            }
            for loaded in [
                inflate_and_parse(&gz, text.len()).expect("inflates"),
                parse_plain(text.clone()),
            ] {
                match loaded {
                    Loaded::Parsed(got) => assert_same(&got, &want),
                    Loaded::Text(_) => panic!("{} was not split", file.display()),
                }
            }
            split += 1;
        }
        assert!(split >= 3, "only {split} traces were big enough to split");
    }

    fn walk(path: &std::path::Path) -> Vec<std::path::PathBuf> {
        match std::fs::read_dir(path) {
            Ok(entries) => entries.flatten().flat_map(|e| walk(&e.path())).collect(),
            Err(_) => vec![path.to_path_buf()],
        }
    }

    #[test]
    fn a_wrong_size_hint_still_reads_the_whole_text() {
        let text = big_trace(12_000);
        let want = one_thread(&text);
        for hint in [text.len() / 3, text.len() * 2, 10] {
            let got = match inflate_and_parse(&gzip(&text), hint).expect("inflates") {
                Loaded::Parsed(trace) => *trace,
                Loaded::Text(t) => {
                    assert_eq!(t, text.as_bytes(), "hint {hint}");
                    parse_trace(&t).expect("parses")
                }
            };
            assert_same(&got, &want);
        }
    }

    #[test]
    fn a_cut_in_another_list_is_refused() {
        let text = big_trace(12_000).replacen("{\"a\": 1}, {", "{\"a\": 1},\n    {", 1);
        // In an event's arguments, and in the top-level `deviceProperties`.
        for marker in ["{\"a\": 1},\n    {", "{\"id\": 0},\n    {"] {
            let brace = text.find(marker).expect("marker") + marker.len() - 1;
            let cut = cut_at(text.as_bytes(), brace).expect("looks like a cut");
            let mut closed = text.clone().into_bytes();
            close_head(&mut closed, cut);
            assert!(
                parse::parse_head(&closed[..cut.comma + 2]).is_none(),
                "{marker}"
            );
        }
    }

    #[test]
    fn a_brace_in_a_string_is_no_cut() {
        let text = big_trace(10);
        let brace = text.find("},  {").expect("string") + 4;
        assert_eq!(cut_at(text.as_bytes(), brace), None);
        let text = br#"[{"a": 1}, {"b": "}, {\"c\": 1}"}]"#;
        let braces: Vec<usize> = (0..text.len()).filter(|&i| text[i] == b'{').collect();
        let cuts: Vec<bool> = braces.iter().map(|&b| cut_at(text, b).is_some()).collect();
        assert_eq!(cuts, [false, true, false]);
    }

    #[test]
    fn one_line_json_is_split_too() {
        let text = big_trace(12_000).replace('\n', "").replace("  ", " ");
        let want = one_thread(&text);
        match parse_plain(text.clone().into_bytes()) {
            Loaded::Parsed(got) => assert_same(&got, &want),
            Loaded::Text(_) => panic!("plain text was not split"),
        }
        match inflate_and_parse(&gzip(&text), text.len()).expect("inflates") {
            Loaded::Parsed(got) => assert_same(&got, &want),
            Loaded::Text(_) => panic!("gzip text was not split"),
        }
    }

    #[test]
    fn bad_text_goes_back_whole_for_the_one_thread_parse_to_name_its_error() {
        let text = big_trace(12_000);
        let broken = text.replacen("\"dur\": 3", "\"dur\": [", 1).replacen(
            "\"traceName\"",
            "\"traceName\" 5",
            1,
        );
        for bad in [broken, text[..text.len() - 20].to_string()] {
            match parse_plain(bad.clone().into_bytes()) {
                Loaded::Text(t) => assert_eq!(t, bad.as_bytes()),
                Loaded::Parsed(_) => panic!("bad text parsed"),
            }
            match inflate_and_parse(&gzip(&bad), bad.len()).expect("inflates") {
                Loaded::Text(t) => assert_eq!(t, bad.as_bytes()),
                Loaded::Parsed(_) => panic!("bad text parsed"),
            }
        }
    }

    #[test]
    fn keys_after_the_events_are_read_and_a_dangling_comma_is_refused() {
        let text = big_trace(12_000);
        let dangling = text.replacen("\"traceName\": \"x\"\n}", "\"traceName\": \"x\",\n}", 1);
        let dangling = dangling.replacen(
            "  ],\n  \"distributedInfo\": {\"rank\": 2, \"world_size\": 4},\n  \"traceName\": \"x\",\n}",
            "  ],\n}",
            1,
        );
        assert!(parse_trace(dangling.as_bytes()).is_err());
        assert!(matches!(
            parse_plain(dangling.into_bytes()),
            Loaded::Text(_)
        ));
    }
}
