//! Decaying tags: tag values that shrink on a schedule and grow when bumped.
//!
//! A decaying tag is registered once with [`Decayer::register_decaying_tag`](crate::Decayer)
//! and then bumped per peer. Every `interval` (quantised to the manager's
//! [`decay_resolution`](crate::Config::decay_resolution)) the tag's [`DecayFn`] is applied to
//! each peer's value; it returns the new value and whether to drop the value altogether.
//! [`BumpFn`] computes the value after a bump. The values count in the peer's total like
//! ordinary tags and appear under the tag's name in [`TagInfo::tags`](crate::TagInfo).

use std::fmt;
use std::time::{Duration, Instant};

use meshwire_core::PeerId;

/// Identifies a registered decaying tag. Ids are never reused within one manager.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DecayingTagId(pub(crate) u64);

impl DecayingTagId {
    /// The number behind the id.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for DecayingTagId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decaying-tag#{}", self.0)
    }
}

/// One peer's value of one decaying tag, as seen by [`DecayFn`] and [`BumpFn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecayingValue {
    /// The tag this value belongs to.
    pub tag: DecayingTagId,
    /// The peer holding the value.
    pub peer: PeerId,
    /// When the value was first bumped into existence.
    pub added: Instant,
    /// When the value was last bumped or decayed.
    pub last_visit: Instant,
    /// When the value was last bumped.
    pub last_bump: Instant,
    /// The current value.
    pub value: i32,
}

/// Computes a decayed value: called with the current value and the tick time, returns the
/// new value and `true` to remove the value from the peer instead.
pub type DecayFn = Box<dyn Fn(&DecayingValue, Instant) -> (i32, bool) + Send>;

/// Computes the value after a bump: called with the current value (0 for a new one) and the
/// bump's delta.
pub type BumpFn = Box<dyn Fn(&DecayingValue, i32) -> i32 + Send>;

/// Never decays: the value stays until removed.
pub fn decay_none() -> DecayFn {
    Box::new(|v, _| (v.value, false))
}

/// Subtracts `amount` at each tick; removes the value once it reaches 0 or less.
pub fn decay_fixed(amount: i32) -> DecayFn {
    Box::new(move |v, _| {
        let after = v.value.saturating_sub(amount);
        (after, after <= 0)
    })
}

/// Multiplies the value by `coef` at each tick, rounding down; removes the value once it
/// reaches 0 or less.
pub fn decay_linear(coef: f64) -> DecayFn {
    Box::new(move |v, _| {
        // `as` saturates for out-of-range floats and maps NaN to 0.
        let after = (f64::from(v.value) * coef).floor() as i32;
        (after, after <= 0)
    })
}

/// Keeps the value unchanged while the peer is bumped, and removes it at the first tick at
/// which the last bump is at least `after` old.
///
/// go-libp2p's function of the same name sets the value to 0 at the first tick and compares
/// against the last *visit* (which every tick refreshes); this one does what its name says.
pub fn decay_expire_when_inactive(after: Duration) -> DecayFn {
    Box::new(move |v, now| (v.value, now.saturating_duration_since(v.last_bump) >= after))
}

/// Adds the delta, without bounds (saturating at the `i32` limits).
pub fn bump_sum_unbounded() -> BumpFn {
    Box::new(|v, delta| v.value.saturating_add(delta))
}

/// Adds the delta and clamps the result to `[min, max]`.
pub fn bump_sum_bounded(min: i32, max: i32) -> BumpFn {
    let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
    Box::new(move |v, delta| v.value.saturating_add(delta).clamp(lo, hi))
}

/// Replaces the value with the delta.
pub fn bump_overwrite() -> BumpFn {
    Box::new(|_, delta| delta)
}

/// A registered decaying tag.
pub(crate) struct TagState {
    pub(crate) name: String,
    pub(crate) interval: Duration,
    /// Next decay time, before quantisation to the resolution grid.
    pub(crate) next_tick: Instant,
    pub(crate) decay: DecayFn,
    pub(crate) bump: BumpFn,
}

/// The first point of the grid `epoch + k * step` at or after `t`.
pub(crate) fn grid_ceil(epoch: Instant, step: Duration, t: Instant) -> Instant {
    if t <= epoch {
        return epoch;
    }
    let d = (t - epoch).as_nanos();
    let s = step.as_nanos().max(1);
    let k = d.div_ceil(s);
    add_nanos(epoch, k.saturating_mul(s))
}

/// The last point of the grid `epoch + k * step` at or before `t`.
pub(crate) fn grid_floor(epoch: Instant, step: Duration, t: Instant) -> Instant {
    if t <= epoch {
        return epoch;
    }
    let d = (t - epoch).as_nanos();
    let s = step.as_nanos().max(1);
    add_nanos(epoch, (d / s) * s)
}

/// `t + interval * k` for the smallest `k >= 1` that lands after `now`.
pub(crate) fn advance_past(t: Instant, interval: Duration, now: Instant) -> Instant {
    let i = interval.as_nanos().max(1);
    let behind = now.saturating_duration_since(t).as_nanos();
    let k = behind / i + 1;
    add_nanos(t, k.saturating_mul(i))
}

/// `t + nanos`, or the latest representable instant short of it on overflow.
fn add_nanos(t: Instant, nanos: u128) -> Instant {
    let mut d = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    while !d.is_zero() {
        if let Some(x) = t.checked_add(d) {
            return x;
        }
        d /= 2;
    }
    t
}
