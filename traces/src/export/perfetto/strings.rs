//! Interned strings. Perfetto interns per packet sequence and per kind (categories, event
//! names, argument names, argument string values); the writer gives every distinct string one
//! id for the whole trace and uses it as the iid on every sequence and of every kind, so a
//! lookup is one table probe plus one bit test of what the sequence has already been sent.

use rustc_hash::FxHashMap;

/// The kinds of interned strings, each its own `InternedData` table on a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Category = 0,
    EventName = 1,
    ArgName = 2,
    ArgValue = 3,
}

const KINDS: usize = 4;

/// How many recently used strings the table checks before hashing.
const RECENT_SLOTS: usize = 256;
/// How many static strings the table knows by address.
const STATIC_SLOTS: usize = 256;

/// Every string of the trace, by id (ids count from 1: Perfetto reads 0 as unset).
#[derive(Debug)]
pub(super) struct Strings {
    ids: FxHashMap<Box<str>, u32>,
    texts: Vec<Box<str>>,
    /// A direct-mapped cache of ids (0: empty) by a cheap digest of the string: a producer
    /// repeats a few strings, and comparing with one is cheaper than hashing it.
    recent: Box<[u32; RECENT_SLOTS]>,
    /// A direct-mapped cache of static strings' ids by address (address, length, id): a
    /// static string never changes, so the same address and length are the same text.
    statics: Box<[(usize, usize, u32); STATIC_SLOTS]>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            ids: FxHashMap::default(),
            texts: Vec::new(),
            recent: Box::new([0; RECENT_SLOTS]),
            statics: Box::new([(0, 0, 0); STATIC_SLOTS]),
        }
    }
}

impl Strings {
    /// The id of `text`, added if new.
    #[inline]
    pub(super) fn id(&mut self, text: &str) -> u32 {
        let slot = recent_slot(text.as_bytes());
        let id = self.recent[slot];
        if id != 0 && same(self.texts[id as usize - 1].as_bytes(), text.as_bytes()) {
            return id;
        }
        let id = self.lookup(text);
        self.recent[slot] = id;
        id
    }

    /// The id of a static string, known by its address after the first time.
    #[inline]
    pub(super) fn static_id(&mut self, text: &'static str) -> u32 {
        let address = text.as_ptr() as usize;
        let slot = (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - STATIC_SLOTS.trailing_zeros());
        let (known, len, id) = self.statics[slot as usize];
        if known == address && len == text.len() && id != 0 {
            return id;
        }
        let id = self.id(text);
        self.statics[slot as usize] = (address, text.len(), id);
        id
    }

    fn lookup(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = u32::try_from(self.texts.len() + 1).expect("fewer than 2^32 distinct strings");
        self.ids.insert(text.into(), id);
        self.texts.push(text.into());
        id
    }

    pub(super) fn text(&self, id: u32) -> &str {
        &self.texts[id as usize - 1]
    }
}

/// Which strings of each kind one sequence has been sent.
#[derive(Debug, Default)]
pub(super) struct Sent {
    bits: [Vec<u64>; KINDS],
}

impl Sent {
    /// Marks `id` of `kind` as sent; true if it was not yet (so it must go with this packet).
    #[inline]
    pub(super) fn first_use(&mut self, kind: Kind, id: u32) -> bool {
        let bits = &mut self.bits[kind as usize];
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        let fresh = bits[word] & bit == 0;
        bits[word] |= bit;
        fresh
    }
}

/// The cache slot of a string: its length and first, middle and last bytes tell a producer's
/// few strings apart, mixed by a multiplicative hash (slots are its top bits).
#[inline]
fn recent_slot(bytes: &[u8]) -> usize {
    let byte = |i: usize| bytes.get(i).map_or(0, |&b| u64::from(b));
    let last = bytes.len().saturating_sub(1);
    let digest = bytes.len() as u64 | byte(0) << 16 | byte(last / 2) << 24 | byte(last) << 32;
    (digest.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RECENT_SLOTS.trailing_zeros())) as usize
}

/// Byte equality without a call to memcmp for the short strings a trace is made of: two
/// overlapping loads cover every length from 4 to 16 bytes.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let u32_at = |s: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let u64_at = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(w)
    };
    match n {
        0 => true,
        // First, middle and last cover every byte of up to three.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => u32_at(a, 0) == u32_at(b, 0) && u32_at(a, n - 4) == u32_at(b, n - 4),
        8..=16 => u64_at(a, 0) == u64_at(b, 0) && u64_at(a, n - 8) == u64_at(b, n - 8),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_distinct_string() {
        let mut strings = Strings::default();
        let names = [
            "op",
            "matmul.qkv",
            "matmul.qkx",
            "a",
            "",
            "a much longer name than sixteen",
        ];
        let ids: Vec<u32> = names.iter().map(|n| strings.id(n)).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
        for (name, id) in names.iter().zip(&ids) {
            assert_eq!(strings.id(name), *id);
            assert_eq!(strings.text(*id), *name);
        }
    }

    #[test]
    fn strings_sharing_a_cache_slot_keep_their_ids() {
        let mut strings = Strings::default();
        // Same length, first, middle and last bytes: the same slot.
        let (a, b) = ("axxbxxc", "ayybyyc");
        assert_eq!(recent_slot(a.as_bytes()), recent_slot(b.as_bytes()));
        let (ia, ib) = (strings.id(a), strings.id(b));
        assert_ne!(ia, ib);
        assert_eq!(strings.id(a), ia);
        assert_eq!(strings.id(b), ib);
    }

    #[test]
    fn short_compare_agrees_with_slices() {
        let texts = [
            "",
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefgX",
            "Xbcdefgh",
            "abcdefghijklmnop",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
        assert!(!same(b"abcdefghijklmnoX", b"abcdefghijklmnop"));
        assert!(!same(b"abcdeXghijklmnop", b"abcdefghijklmnop"));
    }

    #[test]
    fn static_strings_share_ids_with_the_same_text() {
        let mut strings = Strings::default();
        let owned = String::from("layer");
        let id = strings.id(&owned);
        assert_eq!(strings.static_id("layer"), id);
        assert_eq!(strings.static_id("layer"), id);
        // A static string that is a prefix of another at the same address is another string.
        let both: &'static str = "stepping";
        let (step, stepping) = (strings.static_id(&both[..4]), strings.static_id(both));
        assert_ne!(step, stepping);
        assert_eq!(strings.text(step), "step");
        assert_eq!(strings.static_id(&both[..4]), step);
    }

    #[test]
    fn each_kind_is_sent_once_per_sequence() {
        let mut sent = Sent::default();
        assert!(sent.first_use(Kind::EventName, 3));
        assert!(!sent.first_use(Kind::EventName, 3));
        assert!(sent.first_use(Kind::ArgValue, 3));
        assert!(sent.first_use(Kind::EventName, 200));
        let mut other = Sent::default();
        assert!(other.first_use(Kind::EventName, 3));
    }
}
