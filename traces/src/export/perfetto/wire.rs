//! Protobuf wire encoding of single fields straight into a `Vec<u8>`, for the packets the
//! writer builds by hand. prost's `encode_key`/`encode_varint` go through the generic `BufMut`
//! a byte at a time and took a third of the export's time in the profile.

use prost::encoding::WireType;

/// Appends a varint field.
#[inline]
pub(super) fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    // Most fields (types, iids, flags, small deltas) have one-byte keys and values.
    if field < 16 && value < 0x80 {
        buf.extend_from_slice(&[(field << 3) as u8, value as u8]);
    } else {
        long_varint_field(buf, field, value);
    }
}

fn long_varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    let (key, key_len) = varint_word(u64::from(field) << 3);
    let (value, value_len) = varint_word(value);
    let word = key | value << (8 * key_len);
    append_prefix(buf, &word.to_le_bytes(), key_len + value_len);
}

/// A varint field in the low bytes of a word, and its length: the key's varint bytes then the
/// value's, for a caller to append with others in one copy.
#[inline]
pub(super) fn varint_field_word(field: u32, value: u64) -> (u128, usize) {
    let (key, key_len) = varint_word(u64::from(field) << 3);
    let (value, value_len) = varint_word(value);
    (key | value << (8 * key_len), key_len + value_len)
}

/// A 64-bit field (`double`, `fixed64`) of a one-byte key in a word, and its length (9).
#[inline]
pub(super) fn fixed64_field_word(field: u32, bits: u64) -> (u128, usize) {
    debug_assert!(field < 16, "a one-byte key");
    let key = u128::from(field << 3 | WireType::SixtyFourBit as u32);
    (key | u128::from(bits) << 8, 9)
}

/// Appends the first `len` bytes of a little-endian word (see `append_prefix`).
#[inline]
pub(super) fn append_word(buf: &mut Vec<u8>, word: u128, len: usize) {
    append_prefix(buf, &word.to_le_bytes(), len);
}

/// Appends a length-delimited field.
pub(super) fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, WireType::LengthDelimited);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Appends a 64-bit field (`fixed64`, `double`).
#[inline]
pub(super) fn fixed64_field(buf: &mut Vec<u8>, field: u32, bits: u64) {
    put_key(buf, field, WireType::SixtyFourBit);
    buf.extend_from_slice(&bits.to_le_bytes());
}

#[inline]
pub(super) fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: WireType) {
    put_varint(buf, u64::from(field) << 3 | wire_type as u64);
}

#[inline]
pub(super) fn put_varint(buf: &mut Vec<u8>, value: u64) {
    let (word, len) = varint_word(value);
    append_prefix(buf, &word.to_le_bytes(), len);
}

/// The encoded size of a varint.
#[inline]
pub(super) fn varint_len(value: u64) -> usize {
    VARINT_LEN[(value | 1).leading_zeros() as usize] as usize
}

/// The varint size of a value by its leading zeros: each byte holds 7 bits.
const VARINT_LEN: [u8; 65] = {
    let mut table = [0u8; 65];
    let mut zeros = 0;
    while zeros <= 64 {
        table[zeros] = (64 - zeros).div_ceil(7) as u8;
        zeros += 1;
    }
    table
};

/// The encoded size of a field's key.
#[inline]
pub(super) fn key_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// `value` as varint bytes in the low bytes of a little-endian word, and how many there are.
/// Built in a register, not byte by byte in memory: reading those bytes back as one block
/// stalled on store forwarding and took half the export's time.
#[inline]
fn varint_word(mut value: u64) -> (u128, usize) {
    if value < 1 << 56 {
        return short_varint_word(value);
    }
    let mut word = 0u128;
    let mut len = 0;
    while value >= 0x80 {
        word |= u128::from(value as u8 | 0x80) << (8 * len);
        value >>= 7;
        len += 1;
    }
    word |= u128::from(value as u8) << (8 * len);
    (word, len + 1)
}

/// `varint_word` for values below 2^56 (at most 8 bytes), without branches: each 7-bit group
/// is shifted to its byte and the continuation bits come from the length. A loop that stops
/// at the last byte mispredicts on every change of length, and argument values change length
/// from one to the next.
#[inline]
fn short_varint_word(value: u64) -> (u128, usize) {
    let (word, len) = short_varint(value);
    (u128::from(word), len)
}

/// The varint of a value below 2^56 in the low bytes of a word, and how many bytes it takes.
#[inline]
pub(super) fn short_varint(value: u64) -> (u64, usize) {
    const GROUP: u64 = 0x7f;
    let word = (value & GROUP)
        | (value << 1) & (GROUP << 8)
        | (value << 2) & (GROUP << 16)
        | (value << 3) & (GROUP << 24)
        | (value << 4) & (GROUP << 32)
        | (value << 5) & (GROUP << 40)
        | (value << 6) & (GROUP << 48)
        | (value << 7) & (GROUP << 56);
    let len = varint_len(value);
    (word | CONTINUATION[len], len)
}

/// The continuation bits of a varint of each length up to 8: every byte but the last.
const CONTINUATION: [u64; 9] = {
    let mut table = [0u64; 9];
    let mut len = 2;
    while len <= 8 {
        table[len] = table[len - 1] | 0x80 << (8 * (len - 2));
        len += 1;
    }
    table
};

/// Appends `bytes[..len]`. Copying the whole array and truncating is a fixed-size copy the
/// compiler inlines; a copy of `len` bytes is a call to memmove, which took half the time.
#[inline]
fn append_prefix<const N: usize>(buf: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let old_len = buf.len();
    buf.extend_from_slice(bytes);
    buf.truncate(old_len + len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_prost() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            1 << 35,
            (1 << 56) - 1,
            1 << 56,
            u64::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint(&mut ours, value);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(value, &mut theirs);
            assert_eq!(ours, theirs, "{value}");
            assert_eq!(varint_len(value), theirs.len(), "{value}");
        }
    }

    #[test]
    fn field_words_match_prost() {
        for (field, value) in [(1, 5), (3, 300), (17, 1 << 40), (4, u64::MAX)] {
            let (word, len) = varint_field_word(field, value);
            let mut ours = Vec::new();
            append_word(&mut ours, word, len);
            let mut theirs = Vec::new();
            prost::encoding::uint64::encode(field, &value, &mut theirs);
            assert_eq!(ours, theirs, "{field}={value}");
        }
        let (word, len) = fixed64_field_word(5, 2.5f64.to_bits());
        let mut ours = Vec::new();
        append_word(&mut ours, word, len);
        let mut theirs = Vec::new();
        prost::encoding::double::encode(5, &2.5, &mut theirs);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn fields_match_prost() {
        for (field, value) in [(1, 5), (15, 127), (16, 1), (58, 6), (47, 1 << 40)] {
            let mut ours = Vec::new();
            varint_field(&mut ours, field, value);
            let mut theirs = Vec::new();
            prost::encoding::uint64::encode(field, &value, &mut theirs);
            assert_eq!(ours, theirs, "{field}={value}");
        }
    }
}
