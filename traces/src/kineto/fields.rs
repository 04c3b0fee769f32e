//! One element of `traceEvents` read in place: the parser keeps one `RawEvent`, clears it
//! before each event and lets serde fill its fields where they lie. A derived `Deserialize`
//! would build the event (about 400 bytes, args included) on the stack and move it out two or
//! three times per event, which showed as a tenth of the parse in profiles.
//!
//! Only the fields pinch reads are kept, every other one is skipped; a field given twice is an
//! error, as with serde's derive.

use super::parse::{LenientInt, LenientStr, Nanos, Str};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// The fields of one event that pinch reads.
#[derive(Default)]
pub(super) struct RawEvent<'a> {
    pub ph: Option<Str<'a>>,
    pub cat: Option<Str<'a>>,
    pub name: Option<Str<'a>>,
    pub ts: Option<Nanos>,
    pub dur: Option<Nanos>,
    pub pid: Option<LenientInt>,
    pub tid: Option<LenientInt>,
    pub id: Option<LenientInt>,
    /// Whether the event has an `args` object (`args: null` is none).
    pub has_args: bool,
    pub args: RawArgs<'a>,
}

impl<'a> RawEvent<'a> {
    pub fn args(&self) -> Option<&RawArgs<'a>> {
        self.has_args.then_some(&self.args)
    }
}

/// The fields of an event's `args` that pinch reads.
#[derive(Default)]
pub(super) struct RawArgs<'a> {
    pub stream: Option<LenientInt>,
    pub device: Option<LenientInt>,
    pub correlation: Option<LenientInt>,
    /// `External id` (older traces: `external id`).
    pub external_id: Option<LenientInt>,
    /// `Collective name`.
    pub collective: Option<Str<'a>>,
    /// `In msg nelems`, `Out msg nelems`, `Group size`.
    pub in_msg_nelems: Option<LenientInt>,
    pub out_msg_nelems: Option<LenientInt>,
    pub group_size: Option<LenientInt>,
    pub dtype: Option<LenientStr<'a>>,
    /// `Process Group Name`, `Process Group Description`, `Process Group Ranks`.
    pub group_name: Option<LenientStr<'a>>,
    pub group_description: Option<LenientStr<'a>>,
    pub group_ranks: Option<LenientStr<'a>>,
}

impl RawArgs<'_> {
    /// Whether the args say anything of a collective's sizes or group (few events do).
    pub fn has_comm(&self) -> bool {
        self.in_msg_nelems.is_some()
            || self.out_msg_nelems.is_some()
            || self.group_size.is_some()
            || self.group_name.is_some()
    }
}

/// Reads one event into the `RawEvent` it holds, which the caller has cleared.
pub(super) struct EventSeed<'e, 'a>(pub &'e mut RawEvent<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for EventSeed<'_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// The keys of the fields read, by index (the names errors give).
const EVENT_KEYS: [&str; 9] = ["ph", "cat", "name", "ts", "dur", "pid", "tid", "id", "args"];

const ARGS_KEYS: [&str; 12] = [
    "stream",
    "device",
    "correlation",
    "External id",
    "Collective name",
    "In msg nelems",
    "Out msg nelems",
    "Group size",
    "dtype",
    "Process Group Name",
    "Process Group Description",
    "Process Group Ranks",
];

/// Marks field `index` of `keys` seen; an error if it was already.
fn first_sight<E: de::Error>(seen: &mut u16, index: usize, keys: &[&'static str]) -> Result<(), E> {
    let bit = 1u16 << index;
    if *seen & bit != 0 {
        return Err(E::duplicate_field(keys[index]));
    }
    *seen |= bit;
    Ok(())
}

impl<'de: 'a, 'a> Visitor<'de> for EventSeed<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct RawEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let event = self.0;
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Key<EventKeys>>()? {
            let Some(index) = key.0 else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            first_sight(&mut seen, index, &EVENT_KEYS)?;
            match index {
                0 => event.ph = map.next_value()?,
                1 => event.cat = map.next_value()?,
                2 => event.name = map.next_value()?,
                3 => event.ts = map.next_value()?,
                4 => event.dur = map.next_value()?,
                5 => event.pid = map.next_value()?,
                6 => event.tid = map.next_value()?,
                7 => event.id = map.next_value()?,
                _ => event.has_args = map.next_value_seed(ArgsSeed(&mut event.args))?,
            }
        }
        Ok(())
    }
}

/// Reads `args` (an object, or null for none) into the `RawArgs` it holds; whether it was one.
struct ArgsSeed<'e, 'a>(&'e mut RawArgs<'a>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for ArgsSeed<'_, 'a> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for ArgsSeed<'_, 'a> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct RawArgs")
    }

    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(ArgsFields(self.0))
    }
}

struct ArgsFields<'e, 'a>(&'e mut RawArgs<'a>);

impl<'de: 'a, 'a> Visitor<'de> for ArgsFields<'_, 'a> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct RawArgs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let args = self.0;
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Key<ArgsKeys>>()? {
            let Some(index) = key.0 else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            first_sight(&mut seen, index, &ARGS_KEYS)?;
            match index {
                0 => args.stream = map.next_value()?,
                1 => args.device = map.next_value()?,
                2 => args.correlation = map.next_value()?,
                3 => args.external_id = map.next_value()?,
                4 => args.collective = map.next_value()?,
                5 => args.in_msg_nelems = map.next_value()?,
                6 => args.out_msg_nelems = map.next_value()?,
                7 => args.group_size = map.next_value()?,
                8 => args.dtype = map.next_value()?,
                9 => args.group_name = map.next_value()?,
                10 => args.group_description = map.next_value()?,
                _ => args.group_ranks = map.next_value()?,
            }
        }
        Ok(true)
    }
}

/// A set of keys a map's fields are looked up in.
trait Keys {
    fn index(key: &str) -> Option<usize>;
}

struct EventKeys;

impl Keys for EventKeys {
    fn index(key: &str) -> Option<usize> {
        // A match, not a search of `EVENT_KEYS`: the compiler dispatches on the length first.
        Some(match key {
            "ph" => 0,
            "cat" => 1,
            "name" => 2,
            "ts" => 3,
            "dur" => 4,
            "pid" => 5,
            "tid" => 6,
            "id" => 7,
            "args" => 8,
            _ => return None,
        })
    }
}

struct ArgsKeys;

impl Keys for ArgsKeys {
    fn index(key: &str) -> Option<usize> {
        Some(match key {
            "stream" => 0,
            "device" => 1,
            "correlation" => 2,
            // Older traces spell it in lower case; the two are one field.
            "External id" | "external id" => 3,
            "Collective name" => 4,
            "In msg nelems" => 5,
            "Out msg nelems" => 6,
            "Group size" => 7,
            "dtype" => 8,
            "Process Group Name" => 9,
            "Process Group Description" => 10,
            "Process Group Ranks" => 11,
            _ => return None,
        })
    }
}

/// A map key: the index of the field it names in `K`, if any. Read without copying it.
struct Key<K>(Option<usize>, std::marker::PhantomData<K>);

impl<'de, K: Keys> de::Deserialize<'de> for Key<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor(std::marker::PhantomData))
    }
}

struct KeyVisitor<K>(std::marker::PhantomData<K>);

impl<K: Keys> Visitor<'_> for KeyVisitor<K> {
    type Value = Key<K>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<K>, E> {
        Ok(Key(K::index(key), std::marker::PhantomData))
    }
}
