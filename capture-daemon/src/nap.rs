//! Adaptive pauses: the difference between being woken for every few frames and reading them in
//! batches, which is most of the CPU a capture process spends at moderate rates.

use std::time::Duration;

/// How long to let work gather between rounds while it flows, adapted to the rate: aiming for
/// `target` units (frames, bytes) per round, halving the pause when more arrived, doubling it
/// (up to the ceiling) while fewer than half did.
pub struct Nap {
    pause_ns: u64,
    max_ns: u64,
    target: u64,
}

impl Nap {
    /// The first pause after an idle spell: short, so the start of a burst is seen early.
    const START_NS: u64 = 50_000;
    const MIN_NS: u64 = 10_000;

    pub fn new(target: u64, max_ns: u64) -> Self {
        Nap { pause_ns: Self::START_NS.min(max_ns), max_ns, target: target.max(1) }
    }

    pub fn reset(&mut self) {
        self.pause_ns = Self::START_NS.min(self.max_ns);
    }

    /// The pause before the next round, given how many units the last round brought.
    pub fn after_round(&mut self, units: u64) -> Duration {
        if units >= self.target {
            self.pause_ns = (self.pause_ns / 2).max(Self::MIN_NS.min(self.max_ns));
        } else if units < self.target / 2 {
            self.pause_ns = (self.pause_ns * 2).min(self.max_ns);
        }
        Duration::from_nanos(self.pause_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::Nap;
    use std::time::Duration;

    #[test]
    fn grows_while_work_is_light_and_shrinks_when_it_piles_up() {
        let mut nap = Nap::new(1024, 4_000_000);
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            last = nap.after_round(10);
        }
        assert_eq!(last, Duration::from_millis(4), "light traffic: up to the ceiling");
        assert_eq!(nap.after_round(1024), Duration::from_millis(2), "a quarter ring: halve");
        assert_eq!(nap.after_round(4000), Duration::from_millis(1));
        assert_eq!(nap.after_round(700), Duration::from_millis(1), "in between: keep");
        assert_eq!(nap.after_round(500), Duration::from_millis(2), "under half: grow");
        nap.reset();
        assert_eq!(nap.after_round(1), Duration::from_micros(100), "after idle: start short");
    }

    #[test]
    fn zero_ceiling_never_pauses() {
        let mut nap = Nap::new(1024, 0);
        assert_eq!(nap.after_round(1), Duration::ZERO);
        assert_eq!(nap.after_round(5000), Duration::ZERO);
    }
}
