//! Value types. Each visitor takes one TOML value of the expected kind and checks it right there,
//! inside toml's deserialize call, so toml gives the error that value's own span (also inside
//! arrays). `expecting` completes serde's "invalid type: ..., expected ..." message.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::checks::*;
use super::sizes::parse_size;
use super::*;

/// An integer value.
pub(super) struct IntegerValue<F> {
    expecting: &'static str,
    check: F,
}

impl<T, F: FnOnce(i128) -> Result<T, String>> Visitor<'_> for IntegerValue<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.check)(i128::from(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.check)(i128::from(v)).map_err(E::custom)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

/// A string value.
pub(super) struct StringValue<F> {
    expecting: &'static str,
    check: F,
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StringValue<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

/// A size: integer bytes, or a string for [`parse_size`].
pub(super) struct SizeValue<F> {
    expecting: &'static str,
    check: F,
}

impl<T, F: FnOnce(u64) -> Result<T, String>> Visitor<'_> for SizeValue<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("size {v} is negative")))?;
        (self.check)(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        parse_size(v).and_then(self.check).map_err(E::custom)
    }
}

macro_rules! value_type {
    ($name:ident($inner:ty) = $visitor:ident($expecting:literal, $check:expr)) => {
        pub(super) struct $name(pub(super) $inner);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any($visitor { expecting: $expecting, check: $check }).map($name)
            }
        }
    };
}

value_type!(UnmatchedValue(Unmatched) = StringValue("\"pass\" or \"drop\"", check_unmatched));
value_type!(Snaplen(u32) = IntegerValue("an integer number of bytes", check_snaplen));
value_type!(RingSize(u32) = IntegerValue("an integer power of two", check_ring_size));
value_type!(
    BufferBytes(u64) =
        SizeValue("a size: integer bytes or a string such as \"64 MiB\"", check_buffer_bytes)
);
value_type!(
    RotateBytes(u64) =
        SizeValue("a size: integer bytes or a string such as \"1 GiB\"", check_rotate_bytes)
);
value_type!(Size(u64) = SizeValue("a size: integer bytes or a string such as \"100 GiB\"", Ok));
value_type!(Count(u64) = IntegerValue("an integer", check_count));
value_type!(Percent(u8) = IntegerValue("an integer percentage", check_keep_free_percent));
value_type!(Directory(PathBuf) = StringValue("a directory path (a string)", check_directory));
value_type!(Prefix(String) = StringValue("a file name prefix (a string)", check_prefix));
value_type!(GroupValue(Option<FileGroup>) = StringValue("a group name (a string)", check_group));
value_type!(IfName(String) = StringValue("an interface name (a string)", check_ifname));
value_type!(
    XdpModeValue(XdpMode) = StringValue("\"auto\", \"native\" or \"generic\"", check_xdp_mode)
);
value_type!(ModeValue(Mode) = StringValue("\"tap\" or \"mirror\"", check_mode));
value_type!(
    TapRingBytes(u64) =
        SizeValue("a size: integer bytes or a string such as \"4 MiB\"", check_tap_ring_bytes)
);
value_type!(ZeroCopyValue(ZeroCopy) = StringValue("\"auto\", \"on\" or \"off\"", check_zero_copy));
value_type!(BusyPoll(u32) = IntegerValue("an integer number of microseconds", check_busy_poll));
value_type!(BatchDelay(u32) = IntegerValue("an integer number of microseconds", check_batch_delay));
value_type!(
    ListenAddr(std::net::SocketAddr) =
        StringValue("an address and port (a string such as \"127.0.0.1:9464\")", check_listen)
);
value_type!(TargetName(String) = StringValue("a target name (a string)", check_target_name));
value_type!(
    Mac([u8; 6]) = StringValue("a MAC address (a string such as \"52:54:00:12:34:56\")", check_mac)
);
value_type!(Vlan(u16) = IntegerValue("a VLAN ID (an integer)", check_vlan));
value_type!(Vni(u32) = IntegerValue("a VXLAN/Geneve VNI (an integer)", check_vni));
value_type!(VmName(String) = StringValue("a libvirt domain name (a string)", check_vm_name));
value_type!(Port(u16) = IntegerValue("a UDP port (an integer)", check_port));
value_type!(
    TargetOutputValue(TargetOutput) = StringValue("\"shared\" or \"own\"", check_target_output)
);
value_type!(LibvirtUri(String) = StringValue("a libvirt URI (a string)", check_libvirt_uri));
value_type!(QueueIndex(u32) = IntegerValue("an RX queue index (an integer)", check_queue));

/// `queues`: "all" or a list of indices. Duplicates are checked later, with each element's span.
pub(super) enum RawQueues {
    All,
    List(Vec<Spanned<QueueIndex>>),
}

impl<'de> Deserialize<'de> for RawQueues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawQueues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\" or a list of RX queue indices such as [0, 1]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawQueues, E> {
                if v == "all" {
                    Ok(RawQueues::All)
                } else {
                    Err(E::custom(format!(
                        "unknown value \"{v}\"; use \"all\" or a list of RX queue indices such as [0, 1]"
                    )))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawQueues, A::Error> {
                let mut list = Vec::new();
                while let Some(q) = seq.next_element()? {
                    list.push(q);
                }
                if list.is_empty() {
                    return Err(de::Error::custom(
                        "empty queue list; list at least one RX queue index, or use \"all\"",
                    ));
                }
                Ok(RawQueues::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// What to call a section's table in "expected ..." messages.
pub(super) trait TableName {
    /// One table, e.g. "a [capture] table".
    const ONE: &'static str;
    /// The array, for array-of-tables sections.
    const MANY: &'static str = "";
}

/// One table and nothing else: serde's derived structs would also take an array of values in
/// field order, so `[[capture]]` or `interface = [["eth0"]]` would be misread.
pub(super) struct Section<T>(pub(super) T);

impl<'de, T: Deserialize<'de> + TableName> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableName> Visitor<'de> for V<T> {
            type Value = Section<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::ONE)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Section<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Section)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// An array of tables (`[[interface]]`, `[[target]]`), each element keeping its span.
pub(super) struct Tables<T>(pub(super) Vec<Spanned<Section<T>>>);

impl<'de, T: Deserialize<'de> + TableName> Deserialize<'de> for Tables<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableName> Visitor<'de> for V<T> {
            type Value = Tables<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::MANY)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tables<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tables(items))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}
