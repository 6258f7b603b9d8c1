//! Which target a frame matched, as the writer sees it: the per-packet comment that names the
//! targets (`targets: web01, db01`, in config order), and which stream of files they go to.
//!
//! The kernel hands over a mask of target slots ([`crate::bpf::Slots`]); the comment for a mask
//! is built once per distinct mask and kept, so the hot path only looks it up: a handful of
//! target sets is what a capture sees, and the cache is bounded for the rest.

use super::pcapng::comment_option;

/// One configured target, as the writer needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRoute {
    /// Its bit in the kernel's match mask.
    pub slot: usize,
    pub name: String,
    /// `output = "own"`: its frames go to a stream of their own.
    pub own: bool,
}

impl TargetRoute {
    #[inline]
    pub fn bit(&self) -> u64 {
        1u64.checked_shl(u32::try_from(self.slot).unwrap_or(u32::MAX)).unwrap_or(0)
    }
}

/// Distinct masks whose comment is kept; past this the cache starts over (a new comment costs
/// one allocation, so even a pathological mix stays cheap).
const CACHE_ENTRIES: usize = 64;

/// The opt_comment option naming the targets of a mask, built once per mask.
#[derive(Debug, Default)]
pub struct Comments {
    /// Targets in config order: (bit, name).
    names: Vec<(u64, String)>,
    /// Every target's bit: other bits (a slot freed by a reload) name nothing.
    known: u64,
    /// (mask, encoded option); the last one hit is looked at first.
    cache: Vec<(u64, Vec<u8>)>,
    last: usize,
}

impl Comments {
    pub fn new(targets: &[TargetRoute]) -> Self {
        let names: Vec<(u64, String)> = targets.iter().map(|t| (t.bit(), t.name.clone())).collect();
        let known = names.iter().fold(0, |m, (bit, _)| m | bit);
        Self { names, known, cache: Vec::with_capacity(CACHE_ENTRIES), last: 0 }
    }

    /// The text for `mask`: `targets: a, b` with the names of the targets whose bit is set, in
    /// config order; empty when none is.
    pub fn text(&self, mask: u64) -> String {
        let matched: Vec<&str> =
            self.names.iter().filter(|(bit, _)| mask & bit != 0).map(|(_, n)| n.as_str()).collect();
        if matched.is_empty() { String::new() } else { format!("targets: {}", matched.join(", ")) }
    }

    /// The encoded opt_comment for `mask` (empty when it names no target).
    #[inline]
    pub fn option(&mut self, mask: u64) -> &[u8] {
        let mask = mask & self.known;
        if mask == 0 {
            return &[];
        }
        if self.cache.get(self.last).is_some_and(|(m, _)| *m == mask) {
            return &self.cache[self.last].1;
        }
        self.lookup(mask)
    }

    #[cold]
    fn lookup(&mut self, mask: u64) -> &[u8] {
        if let Some(i) = self.cache.iter().position(|(m, _)| *m == mask) {
            self.last = i;
        } else {
            if self.cache.len() == CACHE_ENTRIES {
                self.cache.clear();
            }
            self.cache.push((mask, comment_option(&self.text(mask))));
            self.last = self.cache.len() - 1;
        }
        &self.cache[self.last].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(slot: usize, name: &str) -> TargetRoute {
        TargetRoute { slot, name: name.into(), own: false }
    }

    #[test]
    fn names_follow_config_order_not_slot_order() {
        // Config order web01, db01; a reload gave db01 the lower slot.
        let c = Comments::new(&[route(5, "web01"), route(2, "db01")]);
        assert_eq!(c.text(1 << 5), "targets: web01");
        assert_eq!(c.text(1 << 2 | 1 << 5), "targets: web01, db01");
        assert_eq!(c.text(1 << 3), "", "a slot no target has names nothing");
        assert_eq!(c.text(0), "");
    }

    #[test]
    fn options_are_encoded_once_per_mask() {
        let mut c = Comments::new(&[route(0, "a"), route(1, "bb"), route(63, "z")]);
        assert!(c.option(0).is_empty());
        assert!(c.option(1 << 7).is_empty());
        assert_eq!(c.option(1), comment_option("targets: a").as_slice());
        assert_eq!(c.option(0b11), comment_option("targets: a, bb").as_slice());
        assert_eq!(c.option(1 << 63 | 1), comment_option("targets: a, z").as_slice());
        // Unknown bits are ignored, so the same entry serves.
        assert_eq!(c.option(0b11 | 1 << 9), comment_option("targets: a, bb").as_slice());
        assert_eq!(c.cache.len(), 3);
        let before = c.cache[1].1.as_ptr();
        assert_eq!(c.option(0b11).as_ptr(), before, "no new encoding for a mask seen before");
    }

    #[test]
    fn the_cache_is_bounded() {
        let routes: Vec<TargetRoute> = (0..64).map(|s| route(s, &format!("t{s}"))).collect();
        let mut c = Comments::new(&routes);
        for mask in 1..=200u64 {
            let want = comment_option(&c.text(mask));
            assert_eq!(c.option(mask), want.as_slice());
            assert!(c.cache.len() <= CACHE_ENTRIES);
        }
    }
}
